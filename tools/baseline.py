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
    entries = read_split(datalist, split)
    # predictions name each image as the datalist does (relative to it), so both files move together
    written = [entry["image"] for entry in json.loads(Path(datalist).read_text())[split]]
    predictions = []
    for entry, name in tqdm(list(zip(entries, written)), desc="LoG baseline"):
        volume = load_volume(entry["image"])
        found = detect_blobs(volume.array[0], volume.affine, threshold=threshold)
        predictions.append({"image": name, **{k: v.tolist() for k, v in found.items()}})
    write_json(out, predictions)
    if not evaluate:
        return None
    classes = read_datalist(datalist).get("classes") or ["0", "1"]
    return round(average_precision_at(predictions, entries, len(classes), iou=0.1), 4)


if __name__ == "__main__":
    run_cli(main)
