"""Convert a released encoder checkpoint (nnssl, MultiTalent) into our ``encoder.pt`` + ``encoder.json``;
copy our own format after checking its weights against the architecture its manifest declares.

    python -m tools.import_encoder --checkpoint C.pth --out DIR [--stem ID] [--modality CT] [--spacing "[1,1,1]"]
"""

from __future__ import annotations

from pathlib import Path

from shared.checkpoints.loading import load_pretrained
from shared.checkpoints.manifest import save_pretrained
from shared.checkpoints.transfer import check_weights_fit_architecture
from shared.io.errors import InputError
from tools._cli import check_writable_folder, run_cli


def import_encoder(
    checkpoint: str,
    out: str,
    stem: str | None = None,
    modality: str | None = None,
    spacing: list[float] | None = None,
) -> str:
    """Imports a checkpoint and writes our encoder format.

    Args:
        checkpoint: the released checkpoint (read with ``weights_only=True``; never executed).
        out: output folder for ``encoder.pt`` and ``encoder.json``.
        stem: stem id for checkpoints with per-dataset stems (MultiTalent).
        modality: the modality the encoder was pre-trained on, when the checkpoint does not say.
        spacing: the pre-training spacing in mm, when the checkpoint does not say.

    Returns:
        Path of the written manifest.
    """
    check_writable_folder(out, what="--out")
    pretrained = load_pretrained(checkpoint, stem=None if stem is None else str(stem))
    if pretrained.scope != "encoder":
        raise InputError(checkpoint, "is a whole network saved by our trainer, not an encoder: give it to the "
                                     "fine-tuning bundle as pretrained_encoder as it is (transfer_mode encoder "
                                     "or all)")
    if str(pretrained.source).endswith(".json"):
        # our own format is copied as it is: check the weights are the architecture it declares (the
        # importers of foreign formats build the architecture from the weights themselves)
        check_weights_fit_architecture(pretrained)
    if modality is not None:
        pretrained.manifest["modality"] = modality
    if spacing is not None:
        pretrained.manifest["spacing"] = [float(value) for value in spacing]
    return str(save_pretrained(pretrained, Path(out)))


def main() -> None:
    run_cli(import_encoder)


if __name__ == "__main__":
    main()
