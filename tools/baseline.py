"""Classical baseline for lung_ct: LoG blobs in a lung mask, written as bundle-format predictions.

    python -m tools.baseline --datalist data/lung_ct/datalist.json --split test --out predictions.json
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from shared.data.synthetic.baseline import average_precision_at, detect_blobs
from shared.io.atomic import write_json
from shared.io.datalist import read_datalist, read_split
from shared.io.images import load_volume
from tools._cli import check_writable_file, run_cli


def main(datalist: str, out: str, split: str = "test", threshold: float = 40.0, evaluate: bool = True) -> float | None:
    """Detect blobs in every scan of ``split``; write predictions; print AP@IoU 0.1 when ``evaluate``.

    Returns:
        AP@0.1 (mean over classes) when ``evaluate``, else None.
    """
    check_writable_file(out, what="--out")
    predictions = predict(datalist, split, threshold)
    write_json(out, predictions)
    if not evaluate:
        return None
    classes = read_datalist(datalist).get("classes") or ["0", "1"]
    return round(average_precision_at(predictions, read_split(datalist, split), len(classes), iou=0.1), 4)


def predict(datalist: str | Path, split: str = "test", threshold: float = 40.0) -> list[dict]:
    """The baseline's predictions for every scan of ``split``, each image named as in the datalist
    (relative to it, so both files move together); with one class every blob is labelled 0. A blob's
    score r (its scale-normalised response, at least ``threshold``) is written as r / (r + threshold):
    in (0, 1) like a model's, same order, so the same AP and FROC."""
    entries = read_split(datalist, split)
    written = [entry["image"] for entry in json.loads(Path(datalist).read_text())[split]]
    one_class = len(read_datalist(datalist).get("classes") or ["0", "1"]) == 1
    predictions = []
    for entry, name in tqdm(list(zip(entries, written)), desc="LoG baseline"):
        volume = load_volume(entry["image"])
        found = detect_blobs(volume.array[0], volume.affine, threshold=threshold)
        if one_class:  # lung_nodules: a blob's size names no class
            found["label"] = 0 * found["label"]
        # blob responses (>= threshold) squashed into (0, 1) in the same order, read like probabilities
        found["label_scores"] = found["label_scores"] / (found["label_scores"] + threshold)
        predictions.append({"image": name, **{k: v.tolist() for k, v in found.items()}})
    return predictions


if __name__ == "__main__":
    run_cli(main)
