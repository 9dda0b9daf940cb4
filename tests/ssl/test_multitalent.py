import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss

from shared.losses.multitalent import MultiTalentLoss, task_loss
from shared.networks.multitalent import MultiTalentNetwork, SegmentationTask
from shared.ssl.multitalent import (DatasetDice, MultiDatasetSegmenter, MultiTalent, PadChannelsd,
                                   multitalent_encoder_weights, pad_channels, validation_cases)

TASKS = [
    {"name": "lung_ct", "in_channels": 1, "classes": ["lungs", "vessels", "nodules"]},
    {"name": "brain_mri", "in_channels": 2, "classes": ["tissue", "lesion"], "kind": "regions",
     "regions": [[1, 2], [2]]},
    {"name": "chest", "in_channels": 3, "classes": ["heart"]},
]
ENCODERS = [{"name": "resenc", "preset": "tiny"}, {"name": "plain", "preset": "tiny"}]


def mixed_batch(seed=0, size=16):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 3, size, size, size, generator=generator, dtype=torch.float64)
    labels = torch.stack([torch.randint(0, k + 1, (1, size, size, size), generator=generator) for k in (3, 2, 1, 3)])
    return images, labels, ["lung_ct", "brain_mri", "chest", "lung_ct"]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_mixed_batch_equals_each_sample_through_its_own_stem(encoder):
    torch.manual_seed(0)
    network = MultiTalentNetwork(TASKS, encoder_spec=encoder).double()
    images, _, datasets = mixed_batch()
    batched = network(images, datasets)["seg_logits"]
    assert batched.shape == (4, 4 + 2 + 2, 16, 16, 16)
    for b, name in enumerate(datasets):
        channels = network.tasks[network.task_names.index(name)].in_channels
        stem = network.stems[name](images[b:b + 1, :channels])
        alone = network.decoder(network.encoder(stem))
        torch.testing.assert_close(batched[b:b + 1], alone, rtol=0, atol=1e-10)
    # the channels a data set does not have are never read
    padded = images.clone()
    padded[0, 1:] = 123.0
    torch.testing.assert_close(network(padded, datasets)["seg_logits"][0], batched[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_stems_take_the_encoders_stem_place_and_keys(encoder):
    network = MultiTalentNetwork(TASKS, encoder_spec=encoder)
    stem_key = "stem." if encoder["name"] == "resenc" else "stages.0.0.convs.0."
    assert network.encoder_stem_path + "." == stem_key
    assert not any(key.startswith(stem_key) for key in network.encoder.state_dict())
    for task in network.tasks:
        weight = next(v for k, v in network.stems[task.name].state_dict().items() if v.ndim == 5)
        assert weight.shape[:2] == (network.stem_width, task.in_channels)
    state, stems = multitalent_encoder_weights(network, "brain_mri")
    from shared.encoders import build_encoder

    reference = build_encoder(encoder, 2).state_dict()
    assert sorted(state) == sorted(reference)
    assert all(state[key].shape == reference[key].shape for key in reference)
    assert sorted(stems) == sorted(network.task_names)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_gradients_reach_each_stem_only_from_its_own_samples(encoder):
    torch.manual_seed(0)
    # residual blocks start as identities (zero last norm), which stops gradients to their first conv
    encoder = {**encoder, "zero_init_residual": False} if encoder["name"] == "resenc" else encoder
    model = MultiTalent(TASKS, encoder_spec=encoder).double()
    images, labels, datasets = mixed_batch(1)
    model(images, labels, datasets)["loss"].backward()
    last = len(model.network.decoder.seg_layers) - 1
    for name, parameter in model.named_parameters():
        if "seg_layers." in name and f"seg_layers.{last}." not in name:
            continue  # deep-supervision outputs, unused without it (kept for DNA's keys)
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad(set_to_none=True)
    logits = model.network(images, datasets)["seg_logits"]
    logits[[1]].sum().backward()  # the brain_mri sample alone
    for name, stem in model.network.stems.items():
        grads = [p.grad for p in stem.parameters()]
        if name == "brain_mri":
            assert all(g is not None and g.abs().sum() > 0 for g in grads[:1])
        else:
            assert all(g is None or g.abs().sum() == 0 for g in grads), name


def test_loss_ignores_other_data_sets_channels():
    torch.manual_seed(0)
    loss = MultiTalentLoss(TASKS)
    _, labels, datasets = mixed_batch(2)
    indices = [0, 1, 2, 0]
    logits = torch.randn(4, 8, 16, 16, 16, dtype=torch.float64)
    before = loss(logits, labels, indices)
    perturbed = logits.clone()
    own = {0: slice(0, 4), 1: slice(4, 6), 2: slice(6, 8)}
    for b, index in enumerate(indices):
        mask = torch.ones(8, dtype=torch.bool)
        mask[own[index]] = False
        perturbed[b, mask] += 50 * torch.randn(int(mask.sum()), 16, 16, 16, dtype=torch.float64)
    after = loss(perturbed, labels, indices)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert set(before) == {"loss", *(f"{kind}/{name}" for kind in ("loss", "dice")
                                     for name in ("lung_ct", "brain_mri", "chest"))}
    lung = task_loss(SegmentationTask.from_spec(TASKS[0]), logits[[0, 3], 0:4], labels[[0, 3]])[0]
    brain = task_loss(SegmentationTask.from_spec(TASKS[1]), logits[[1], 4:6], labels[[1]])[0]
    chest = task_loss(SegmentationTask.from_spec(TASKS[2]), logits[[2], 6:8], labels[[2]])[0]
    torch.testing.assert_close(before["loss"], (2 * lung + brain + chest) / 4)


def test_task_losses_match_monai():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, 8, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 1, 8, 8, 8))
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                           smooth_nr=1e-5, smooth_dr=1e-5)(logits, labels)
    ours, _ = task_loss(SegmentationTask.from_spec(TASKS[0]), logits, labels)
    torch.testing.assert_close(ours, reference)
    region_logits = logits[:, :2]
    region_labels = labels.clamp(max=2)
    targets = torch.cat([(region_labels >= 1), (region_labels == 2)], 1).double()
    reference = (DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(region_logits, targets)
                 + torch.nn.functional.binary_cross_entropy_with_logits(region_logits, targets))
    ours, _ = task_loss(SegmentationTask.from_spec(TASKS[1]), region_logits, region_labels)
    torch.testing.assert_close(ours, reference)


def test_dice_of_a_perfect_prediction_is_one():
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    labels[..., 2:5, 2:5, 2:5] = 1
    labels[..., 5:7, 5:7, 5:7] = 3
    logits = torch.nn.functional.one_hot(labels[:, 0], 4).movedim(-1, 1).double() * 10
    _, dice = task_loss(SegmentationTask.from_spec(TASKS[0]), logits, labels)
    assert float(dice) == 1.0  # class 2 is absent from both and left out


def test_validation_dice_is_per_data_set_over_its_scans_and_their_present_classes():
    """DatasetDice: a perfect softmax scan scores 1, a region scan with one of its two regions wrong 0.5;
    a scan with nothing to score (empty label and prediction) is left out, as is a data set without scans."""
    metric = DatasetDice(TASKS)
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    labels[..., 2:5, 2:5, 2:5] = 1
    labels[..., 5:7, 5:7, 5:7] = 3
    perfect = torch.nn.functional.one_hot(labels[:, 0], 4).movedim(-1, 1).float() * 10
    metric.update((perfect, labels[0].numpy(), "lung_ct"))
    background_only = torch.zeros(1, 4, 8, 8, 8)
    background_only[:, 0] = 10
    metric.update((background_only, np.zeros((1, 8, 8, 8)), "lung_ct"))
    brain = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    brain[..., :4, :, :] = 1  # region [1, 2] is the first half, region [2] is empty
    region_logits = torch.full((1, 2, 8, 8, 8), -10.0)
    region_logits[:, 0, :4] = 10  # region 0 right
    region_logits[:, 1, :2] = 10  # region 1 predicted where there is none
    metric.update((region_logits, brain, "brain_mri"))
    assert metric.compute() == {"val/dice/lung_ct": 1.0, "val/dice/brain_mri": 0.5, "val/dice": 0.75}
    metric.reset()
    assert np.isnan(metric.compute()["val/dice"]) and len(metric.compute()) == 1


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_validation_segmenter_routes_each_scan_through_its_data_sets_stem(encoder):
    torch.manual_seed(0)
    model = MultiTalent(TASKS, encoder_spec=encoder).double().eval()
    images = torch.randn(1, 2, 16, 16, 16, dtype=torch.float64)
    routed = MultiDatasetSegmenter(model)(images, dataset="brain_mri")
    alone = model.network(pad_channels(images.transpose(0, 1), 3).transpose(0, 1), ["brain_mri"])["seg_logits"]
    torch.testing.assert_close(routed, alone[:, model.network.channel_slices["brain_mri"]])
    assert routed.shape[1] == 2


def test_validation_cases_take_the_first_scans_of_every_data_set():
    collection = {"datasets": {"a": {"validation": [{"image": "a0"}, {"image": "a1"}]}, "b": {"training": []}}}
    assert validation_cases(collection, 1) == [{"image": "a0", "dataset": "a"}]
    assert [case["image"] for case in validation_cases(collection)] == ["a0", "a1"]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="lung_ct.*holds 5"):
        task_loss(SegmentationTask.from_spec(TASKS[0]), torch.zeros(1, 4, 4, 4, 4), torch.full((1, 1, 4, 4, 4), 5))
    with pytest.raises(ValueError, match="unique names"):
        MultiTalentNetwork([TASKS[0], TASKS[0]], encoder_spec=ENCODERS[0])
    with pytest.raises(ValueError, match="without dots"):
        SegmentationTask.from_spec({"name": "a.b", "in_channels": 1, "classes": ["x"]})
    network = MultiTalentNetwork(TASKS, encoder_spec=ENCODERS[0])
    with pytest.raises(ValueError, match="datasets: expected 1 names"):
        network(torch.zeros(1, 3, 16, 16, 16), ["liver"])


def test_pad_channels():
    image = np.ones((1, 2, 2, 2), dtype=np.float32)
    padded = pad_channels(image, 3)
    assert padded.shape == (3, 2, 2, 2) and padded[0].min() == 1 and padded[1:].max() == 0
    assert pad_channels(torch.ones(2, 2, 2, 2), 2).shape == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="more than"):
        pad_channels(image, 0)
    sample = PadChannelsd("image", 2)({"image": torch.ones(1, 2, 2, 2), "label": torch.ones(1, 2, 2, 2)})
    assert sample["image"].shape == (2, 2, 2, 2) and sample["label"].shape == (1, 2, 2, 2)
    assert sample["image"][1].abs().sum() == 0


def blob_problem(generator, size=16):
    """Three tiny tasks: bright ball / dark cube (1 channel), a ball seen in channel 2 (2 channels), a shell."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    images, labels, datasets = [], [], []
    for name in ("lung_ct", "brain_mri", "chest", "lung_ct"):
        centre = torch.randint(5, size - 5, (3, 1, 1, 1), generator=generator).float()
        distance = (grid - centre).norm(dim=0)
        image = 0.3 * torch.randn(3, size, size, size, generator=generator)
        label = torch.zeros(size, size, size, dtype=torch.long)
        if name == "lung_ct":
            label[distance < 3.5] = 1
            label[(grid - centre).abs().amax(0) < 1.5] = 2
            image[0] += (label == 1).float() - (label == 2).float()
        elif name == "brain_mri":
            label[distance < 4] = 1
            label[distance < 2] = 2
            image[1] += (label > 0).float()
            image[0] += (label == 2).float()
        else:
            label[(distance > 2) & (distance < 4)] = 1
            image[2] += label.float()
        images.append(image)
        labels.append(label[None])
        datasets.append(name)
    return torch.stack(images), torch.stack(labels), datasets


def test_loss_falls_and_dice_rises_on_a_tiny_three_task_problem():
    torch.manual_seed(0)
    tasks = [TASKS[0], TASKS[1], {"name": "chest", "in_channels": 3, "classes": ["shell"]}]
    model = MultiTalent(tasks, encoder_spec={"name": "resenc", "preset": "tiny"})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(100):
        losses = model(*blob_problem(generator))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({key: float(value) for key, value in losses.items()})
    first = np.mean([h["loss"] for h in history[:10]])
    last = np.mean([h["loss"] for h in history[-10:]])
    assert last < 0.6 * first, (first, last)
    for name in ("lung_ct", "brain_mri", "chest"):
        early = np.nanmean([h[f"dice/{name}"] for h in history[:10]])
        late = np.nanmean([h[f"dice/{name}"] for h in history[-10:]])
        assert late > early + 0.2, (name, early, late)


def test_deep_supervision_weights_and_downsampled_labels():
    from shared.losses.multitalent import deep_supervision_weights, downsample_labels

    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    labels = torch.arange(8).reshape(1, 1, 2, 2, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    labels = labels.repeat_interleave(2, 4)  # every 2³ block one label
    torch.testing.assert_close(downsample_labels(labels, (2, 2, 2)), torch.arange(8).reshape(1, 1, 2, 2, 2))


def test_deep_supervision_loss_is_the_weighted_sum_over_levels():
    from shared.losses.multitalent import deep_supervision_weights, downsample_labels

    torch.manual_seed(0)
    model = MultiTalent(TASKS, encoder_spec=ENCODERS[0], deep_supervision=True).double()
    images, labels, datasets = mixed_batch(3)
    outputs = model.network(images, datasets)
    levels = [outputs["seg_logits"], *outputs["deep_supervision"]]
    assert [tuple(level.shape[2:]) for level in levels] == [(16, 16, 16), (8, 8, 8), (4, 4, 4)]
    indices = [0, 1, 2, 0]
    expected = sum(weight * model.loss(level, downsample_labels(labels, level.shape[2:]), indices)["loss"]
                   for weight, level in zip(deep_supervision_weights(3), levels))
    found = model(images, labels, datasets)
    torch.testing.assert_close(found["loss"], expected)
    torch.testing.assert_close(found["dice/chest"], model.loss(levels[0], labels, indices)["dice/chest"])
    found["loss"].backward()
    assert model.network.decoder.seg_layers[1].weight.grad.abs().sum() > 0  # the middle output is trained
