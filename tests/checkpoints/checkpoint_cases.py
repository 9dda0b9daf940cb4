"""Genuine tiny checkpoints and stand-in networks for the checkpoint tests (dynamic-network-architectures)."""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from torch import nn

TINY = {
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_blocks_per_stage": [1, 2, 2],
}
NORM_KWARGS = {"eps": 1e-5, "affine": True}
# the architecture our importer should report for TINY
TINY_SPEC = {"name": "resenc", "features": [4, 8, 16], "blocks_per_stage": [1, 2, 2], "strides": [1, 2, 2],
             "kernel_sizes": [3, 3, 3], "conv_bias": True, "norm": ["instance", NORM_KWARGS],
             "act": ["leakyrelu", {"negative_slope": 0.01}]}


def dna_unet(in_channels: int = 1, seed: int = 0, features=None) -> ResidualEncoderUNet:
    """A tiny float64 DNA ResidualEncoderUNet (C -> C), as nnssl pre-trains it, with non-trivial norms."""
    torch.manual_seed(seed)
    kwargs = dict(TINY, features_per_stage=features or TINY["features_per_stage"])
    network = ResidualEncoderUNet(
        in_channels, num_classes=in_channels, n_conv_per_stage_decoder=[1, 1], conv_op=nn.Conv3d,
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs=NORM_KWARGS, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=False, **kwargs,
    ).double()
    _perturb(network)
    return network


def dna_encoder(in_channels: int = 1, seed: int = 1) -> ResidualEncoder:
    """A DNA ResidualEncoder of the same tiny shape (its state dict is the reference layout)."""
    torch.manual_seed(seed)
    encoder = ResidualEncoder(
        in_channels, conv_op=nn.Conv3d, conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs=NORM_KWARGS,
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, return_skips=True, **TINY,
    ).double()
    _perturb(encoder)
    return encoder


def _perturb(module: nn.Module) -> None:
    # norms start at weight 1 / bias 0 in every network: make them differ so equal outputs prove a load
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))


def dynamic_plan(in_channels: int, architecture: str = "ResidualEncoderUNet") -> dict:
    """An adaptation plan as nnssl's ``AdaptationPlan.serialize()`` writes it."""
    return {
        "architecture_plans": {
            "arch_class_name": architecture,
            "arch_kwargs": {
                **TINY, "conv_op": "torch.nn.modules.conv.Conv3d", "n_conv_per_stage_decoder": [1, 1],
                "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": NORM_KWARGS, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.modules.activation.LeakyReLU", "nonlin_kwargs": {"inplace": True},
            },
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"],
        },
        "pretrain_plan": {
            "dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "experiment_planner_used": "ExperimentPlanner",
            "configurations": {"onemmiso": {
                "data_identifier": "nnsslPlans_onemmiso", "preprocessor_name": "DefaultPreprocessor",
                "spacing_style": "onemmiso", "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3}, "resampling_fn_mask": "x",
                "resampling_fn_mask_kwargs": {}, "spacing": [1.0, 1.0, 1.0], "patch_size": [16, 16, 16]}},
        },
        "pretrain_num_input_channels": in_channels,
        "recommended_downstream_patchsize": (16, 16, 16),
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"),
        "key_to_lpe": None,
    }


def save_nnssl_checkpoint(path, network: ResidualEncoderUNet, in_channels: int, plan: dict | None = None) -> None:
    """Writes a checkpoint the way nnssl's trainer does (weights, optimizer, logging, plan)."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    network(torch.randn(1, in_channels, 8, 8, 8, dtype=torch.float64)).sum().backward()
    optimizer.step()
    torch.save({
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {"train_losses": [1.0, 0.5], "epoch_start_timestamps": [0.0, 1.0]},
        "_best_ema": 0.5,
        "current_epoch": 2,
        "init_args": {"configuration_name": "onemmiso", "fold": "all", "device": "cpu"},
        "trainer_name": "BaseMAETrainer",
        "nnssl_adaptation_plan": plan or dynamic_plan(in_channels),
    }, path)


def save_multitalent_checkpoint(path, stems: dict[str, ResidualEncoderUNet]) -> dict[str, ResidualEncoderUNet]:
    """Per-dataset stems ``encoder.stem.<id>.*`` (and their decoder copies) around the first network's stages."""
    first = next(iter(stems.values()))
    weights = {}
    for key, value in first.state_dict().items():
        for prefix in ("encoder.stem.", "decoder.encoder.stem."):
            if key.startswith(prefix):
                for stem_id, network in stems.items():
                    weights[f"{prefix}{stem_id}.{key[len(prefix):]}"] = network.state_dict()[key]
                break
        else:
            weights[key] = value
    torch.save({"network_weights": weights, "trainer_name": "MultiTalentTrainer"}, path)
    return stems


class StandInDetector(nn.Module):
    """Detector stand-in with the network contract's encoder attributes (DNA encoder + a head)."""

    encoder_prefix = "encoder."

    def __init__(self, in_channels: int = 1, seed: int = 2):
        super().__init__()
        self.encoder = dna_encoder(in_channels, seed=seed)
        self.encoder.stem_keys = ["stem."]
        self.head = nn.Conv3d(16, 3, 1).double()

    def forward(self, images):
        return self.head(self.encoder(images)[-1])
