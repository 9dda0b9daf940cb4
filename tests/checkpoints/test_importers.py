import ast
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.checkpoints.checkpoint_cases import (
    TINY_SPEC,
    dna_encoder,
    dna_unet,
    dynamic_plan,
    save_multitalent_checkpoint,
    save_nnssl_checkpoint,
)

from shared.checkpoints.importers import RESENC_L, architecture_from_nnssl, import_checkpoint, infer_resenc_architecture
from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.safe_load import sha256_file
from shared.encoders.presets import build_encoder
from shared.io.errors import InputError

REPOSITORY = Path(__file__).resolve().parents[2]


def assert_same_state(actual, expected):
    assert list(actual) == list(expected)
    for key in expected:
        assert actual[key].dtype == expected[key].dtype and torch.equal(actual[key], expected[key]), key


def test_nnssl_import_equals_dna_encoder(tmp_path):
    network = dna_unet(in_channels=1)
    save_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", network, 1)
    pretrained = load_pretrained(tmp_path / "checkpoint_final.pth")
    assert_same_state(pretrained.state_dict, network.encoder.state_dict())

    fresh = dna_encoder(1, seed=9)
    fresh.load_state_dict(pretrained.state_dict, strict=True)
    images = torch.randn(2, 1, 16, 16, 16, dtype=torch.float64)
    network.eval(), fresh.eval()
    for ours, theirs in zip(fresh(images), network.encoder(images)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)

    manifest = pretrained.manifest
    assert manifest["architecture"] == TINY_SPEC
    assert manifest["in_channels"] == 1 and manifest["spacing"] == [1.0, 1.0, 1.0]
    assert manifest["normalization"] == ["ZScoreNormalization"] and manifest["method"] == "BaseMAETrainer"
    assert manifest["method_settings"]["in_projection_keys"] == ["stem.convs.0.conv", "stem.convs.0.all_modules.0"]
    assert manifest["data"] == {"dataset_name": "Dataset745_OpenMind"}
    assert manifest["source"] == {"format": "nnssl", "file": "checkpoint_final.pth",
                                  "sha256": sha256_file(tmp_path / "checkpoint_final.pth")}


def test_resenc_l_plan_maps_to_the_paper_preset():
    plan = {"arch_class_name": "ResEncL", "arch_kwargs": None, "arch_kwargs_requiring_import": None}
    assert architecture_from_nnssl(plan, Path("c.pth")) == {"name": "resenc", "preset": "paper", **RESENC_L}
    with pytest.raises(InputError, match="PrimusM.*not a residual-encoder"):
        architecture_from_nnssl({"arch_class_name": "PrimusM"}, Path("c.pth"))


def test_inconsistent_decoder_copy_is_refused(tmp_path):
    network = dna_unet()
    save_nnssl_checkpoint(tmp_path / "c.pth", network, 1)
    checkpoint = torch.load(tmp_path / "c.pth", weights_only=True)
    key = "decoder.encoder.stages.1.blocks.0.conv1.conv.bias"
    # the copy shares storage with the encoder's tensor in a genuine checkpoint: replace, do not edit
    checkpoint["network_weights"][key] = checkpoint["network_weights"][key] + 1
    torch.save(checkpoint, tmp_path / "c.pth")
    with pytest.raises(InputError, match="differs from its encoder copy"):
        import_checkpoint(tmp_path / "c.pth")


def test_wrong_channel_count_in_plan_is_refused(tmp_path):
    save_nnssl_checkpoint(tmp_path / "c.pth", dna_unet(1), 1, plan=dynamic_plan(2))
    with pytest.raises(InputError, match="pretrain_num_input_channels=2"):
        import_checkpoint(tmp_path / "c.pth")


def test_multitalent_stem_choice(tmp_path):
    stems = save_multitalent_checkpoint(tmp_path / "mt.pth", {"ct": dna_unet(1, seed=0), "brats": dna_unet(2, seed=1)})
    with pytest.raises(InputError, match=r"choose one with stem=<id>; available: brats \(2 channel\(s\)\), ct \(1"):
        load_pretrained(tmp_path / "mt.pth")
    with pytest.raises(InputError, match="has no stem 'mri'; available: brats"):
        load_pretrained(tmp_path / "mt.pth", stem="mri")

    pretrained = load_pretrained(tmp_path / "mt.pth", stem="brats")
    expected = dna_encoder(2).state_dict()
    for key, value in stems["ct"].encoder.state_dict().items():
        if not key.startswith("stem."):
            expected[key] = value
    for key, value in stems["brats"].encoder.state_dict().items():
        if key.startswith("stem."):
            expected[key] = value
    assert sorted(pretrained.state_dict) == sorted(expected)
    assert all(torch.equal(pretrained.state_dict[key], expected[key]) for key in expected)
    assert set(pretrained.stems) == {"ct", "brats"} and pretrained.manifest["in_channels"] == 2
    ct_stem = stems["ct"].encoder.stem.state_dict()
    assert all(torch.equal(pretrained.stems["ct"][key], ct_stem[key]) for key in ct_stem)
    assert pretrained.manifest["method_settings"] == {"stem": "brats", "available_stems": ["brats", "ct"]}
    assert pretrained.manifest["architecture"] == {"name": "resenc", "features": [4, 8, 16],
                                                   "blocks_per_stage": [1, 2, 2], "kernel_sizes": [3, 3, 3],
                                                   "strides": [1, 2, 2]}


@pytest.mark.parametrize("source", ["nnssl", "multitalent"])
def test_an_imported_manifest_builds_the_encoder_it_describes(source, tmp_path):
    network = dna_unet(1, seed=0)
    if source == "nnssl":
        save_nnssl_checkpoint(tmp_path / "c.pth", network, 1)
        pretrained = load_pretrained(tmp_path / "c.pth")
    else:
        save_multitalent_checkpoint(tmp_path / "c.pth", {"ct": network, "brats": dna_unet(2, seed=1)})
        pretrained = load_pretrained(tmp_path / "c.pth", stem="ct")
    encoder = build_encoder(pretrained.manifest["architecture"], pretrained.manifest["in_channels"]).double()
    # the reference network registers every conv/norm twice (all_modules); ours once
    encoder.load_state_dict({key: value for key, value in pretrained.state_dict.items() if ".all_modules." not in key})
    images = torch.randn(1, 1, 16, 16, 16, dtype=torch.float64)
    network.eval(), encoder.eval()
    for ours, theirs in zip(encoder(images), network.encoder(images)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_importers_depend_on_the_manifest_module_and_not_the_other_way():
    import shared.checkpoints.importers as importers
    import shared.checkpoints.manifest as manifest

    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(ast.parse(inspect.getsource(manifest)))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names]
    assert "shared.checkpoints.manifest" in [node.module for node in ast.walk(ast.parse(inspect.getsource(importers)))
                                             if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name and name.startswith("shared.checkpoints.importers")]
    # one place assembles a manifest: the importers fill in the fields, the format's own keys are not theirs
    assert "FORMAT_NAME" not in inspect.getsource(importers) and "library_versions" not in inspect.getsource(importers)


def test_a_trainer_checkpoint_is_not_imported_as_an_encoder(tmp_path):
    from tools.import_encoder import import_encoder

    torch.save(dna_unet().state_dict(), tmp_path / "model.pt")
    with pytest.raises(InputError, match="model.pt: is a whole network saved by our trainer, not an encoder"):
        import_encoder(str(tmp_path / "model.pt"), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "encoder.json").exists()


def test_inferred_architecture_matches_the_weights():
    assert infer_resenc_architecture(dna_encoder().state_dict())["blocks_per_stage"] == [1, 2, 2]


def test_command_line_import_round_trip(tmp_path, monkeypatch, capsys):
    network = dna_unet()
    save_nnssl_checkpoint(tmp_path / "c.pth", network, 1)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    command = [sys.executable, "-m", "tools.import_encoder", "--checkpoint", str(tmp_path / "c.pth"),
               "--out", str(tmp_path / "out"), "--modality", "MRI"]
    done = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "encoder.json").read_text())
    assert manifest["modality"] == "MRI" and manifest["source"]["format"] == "nnssl"
    assert_same_state(load_pretrained(tmp_path / "out").state_dict, network.encoder.state_dict())

    # bad input: a one-line error and exit status 2, no traceback (in-process: a second interpreter is slow)
    from tools import import_encoder

    monkeypatch.setattr(sys, "argv", ["import_encoder", "--checkpoint", str(tmp_path / "missing.pth"),
                                      "--out", str(tmp_path / "other")])
    with pytest.raises(SystemExit) as exited:
        import_encoder.main()
    assert exited.value.code == 2 and "missing.pth: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_resenc_l_nnssl_checkpoint_imports_at_full_size(tmp_path):
    from torch import nn
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    network = ResidualEncoderUNet(
        1, 6, RESENC_L["features"], nn.Conv3d, 3, RESENC_L["strides"], RESENC_L["blocks_per_stage"], 1, [1] * 5, True,
        nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
    )
    plan = {**dynamic_plan(1), "architecture_plans": {"arch_class_name": "ResEncL", "arch_kwargs": None}}
    torch.save({"network_weights": network.state_dict(), "nnssl_adaptation_plan": plan}, tmp_path / "l.pth")
    pretrained = load_pretrained(tmp_path / "l.pth")
    assert pretrained.manifest["architecture"]["preset"] == "paper"
    assert sum(p.numel() for p in network.encoder.parameters()) == 90_296_576  # the paper's ~90.3 M
    assert_same_state(pretrained.state_dict, network.encoder.state_dict())


def _our_encoder(folder, name="plain"):
    from shared.checkpoints.manifest import export_encoder
    from shared.networks.resenc_unet import ResEncUNet

    network = ResEncUNet(1, 1, encoder_spec={"name": name, "preset": "tiny"})
    return export_encoder(network, folder, architecture={"name": name, "preset": "tiny"}, in_channels=1,
                          modality="CT", spacing=[1.0, 1.0, 1.0], normalization="ct", method="mae")


def _rewrite_weights(manifest_path, change):
    """Change the weights of our format and re-hash them, as a hand-edited or mislabelled file would be."""
    manifest = json.loads(manifest_path.read_text())
    weights = manifest_path.parent / manifest["weights"]["file"]
    state = torch.load(weights, weights_only=True)
    change(state)
    torch.save(state, weights)
    manifest["weights"]["sha256"] = sha256_file(weights)
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", ["declared_architecture", "shape", "missing", "unexpected"])
def test_import_of_our_format_refuses_weights_that_do_not_fit_the_declared_architecture(case, tmp_path):
    from tools.import_encoder import import_encoder

    manifest_path = _our_encoder(tmp_path / "encoder")
    if case == "declared_architecture":  # plain weights declared as a ResEnc encoder
        manifest = json.loads(manifest_path.read_text())
        manifest["architecture"] = {"name": "resenc", "preset": "tiny"}
        manifest_path.write_text(json.dumps(manifest))
        expected = r"missing \d+: stages\.0\..*; unexpected \d+: "
    elif case == "shape":
        first = sorted(key for key, value in torch.load(tmp_path / "encoder" / "encoder.pt").items() if value.ndim == 5)[0]
        _rewrite_weights(manifest_path, lambda state: state.update({first: state[first][..., :1]}))
        expected = re.escape(f"shape 1: {first} (weights (8, 1, 3, 3, 1) vs architecture (8, 1, 3, 3, 3))")
    elif case == "missing":
        _rewrite_weights(manifest_path, lambda state: state.pop(sorted(state)[-1]))
        expected = r"missing 1: "
    else:
        _rewrite_weights(manifest_path, lambda state: state.update({"extra.weight": torch.zeros(2)}))
        expected = r"unexpected 1: extra\.weight\)"
    with pytest.raises(InputError, match="encoder.json: the weights do not fit the declared architecture .*" + expected):
        import_encoder(str(manifest_path), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "encoder.json").exists()


def test_import_of_our_format_and_of_an_imported_nnssl_encoder_still_work(tmp_path):
    from tools.import_encoder import import_encoder

    manifest_path = _our_encoder(tmp_path / "encoder", name="resenc")
    copied = import_encoder(str(manifest_path), str(tmp_path / "copy"))
    assert_same_state(load_pretrained(copied).state_dict, load_pretrained(manifest_path).state_dict)
    # an nnssl import keeps the reference network's alias keys (all_modules), which our encoder lacks
    network = dna_unet()
    save_nnssl_checkpoint(tmp_path / "c.pth", network, 1)
    first = import_encoder(str(tmp_path / "c.pth"), str(tmp_path / "imported"))
    again = import_encoder(first, str(tmp_path / "again"))
    assert_same_state(load_pretrained(again).state_dict, network.encoder.state_dict())
    # a MultiTalent import describes its architecture from the weights (no strides)
    save_multitalent_checkpoint(tmp_path / "mt.pth", {"ct": dna_unet(1, seed=0), "brats": dna_unet(2, seed=1)})
    first = import_encoder(str(tmp_path / "mt.pth"), str(tmp_path / "mt"), stem="brats")
    again = import_encoder(first, str(tmp_path / "mt_again"))
    assert_same_state(load_pretrained(again).state_dict, load_pretrained(first).state_dict)
