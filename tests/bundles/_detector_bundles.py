"""What the detector bundle tests share: fine-tuning a detector bundle from an exported encoder."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from shared.checkpoints.manifest import export_encoder
from shared.encoders.presets import build_encoder
from tests.bundles._pretraining import TINY, config_list, run_bundle

TRANSFER_LINE = re.compile(r"transferred (\d+) tensors from (\S+) \(mode encoder, stem random\); (\d+) skipped")


def fine_tune_from_exported_encoder(configs: Path, trained: Path, work: Path, *arguments: str,
                                     architecture: dict = TINY) -> int:
    """Export a seeded tiny encoder as an MAE result, then train ``configs`` (train.json + quick.json) from
    it on ``trained``'s data and cache into ``work/out``; checks the transfer line the run logs.

    Args:
        configs: the configs folder of a detector bundle whose encoder is ``architecture``.
        trained: the root of a module's trained fixture (``data/`` and ``out/cache/``).
        work: an empty folder, the run's working directory.
        arguments: the bundle's size and training overrides.
        architecture: the encoder's spec (default the tiny ResEnc).

    Returns:
        How many encoder tensors the run skipped (the random stem's).
    """
    torch.manual_seed(1)
    pretrained = build_encoder(architecture, 1)
    manifest = export_encoder(pretrained, work / "encoder", architecture=architecture, in_channels=1, modality="CT",
                              spacing=[1.5, 1.5, 1.5], normalization="ct", method="mae")
    result = run_bundle("run", "--config_file", config_list(configs, "train.json", "quick.json"), "--dataset_dir",
                        str(trained / "data"), "--output_dir", str(work / "out"), *arguments,
                        "--cache_dir", str(trained / "out" / "cache"), "--pretrained_encoder", str(manifest), cwd=work)
    output = result.stdout + result.stderr
    found = TRANSFER_LINE.search(output)
    assert found and found.group(2) == str(manifest), output[-3000:]
    # every encoder tensor is either transferred or, with the random stem strategy, a skipped stem tensor
    assert int(found.group(1)) + int(found.group(3)) == len(pretrained.state_dict())
    return int(found.group(3))
