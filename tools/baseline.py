"""Classical baseline for lung_ct: LoG blobs in a lung mask, written as bundle-format predictions.

    python -m tools.baseline --datalist data/lung_ct/datalist.json --split test --out predictions.json
"""

from __future__ import annotations

import sys

import fire
from tqdm import tqdm

from shared.data.synthetic.baseline import average_precision_at, detect_blobs
from shared.io.atomic import write_json
from shared.io.datalist import read_datalist, read_split
from shared.io.errors import InputError
from shared.io.images import load_volume


def main(datalist: str, out: str, split: str = "test", threshold: float = 40.0, evaluate: bool = True) -> float | None:
    """Detect blobs in every scan of ``split``; write predictions; print AP@IoU 0.1 when ``evaluate``.

    Returns:
        AP@0.1 (mean over classes) when ``evaluate``, else None.
    """
    entries = read_split(datalist, split)
    predictions = []
    for entry in tqdm(entries, desc="LoG baseline"):
        volume = load_volume(entry["image"])
        found = detect_blobs(volume.array[0], volume.affine, threshold=threshold)
        predictions.append({"image": entry["image"], **{k: v.tolist() for k, v in found.items()}})
    write_json(out, predictions)
    if not evaluate:
        return None
    classes = read_datalist(datalist).get("classes") or ["0", "1"]
    return round(average_precision_at(predictions, entries, len(classes), iou=0.1), 4)


if __name__ == "__main__":
    try:
        fire.Fire(main)
    except InputError as error:
        sys.exit(f"error: {error}")
