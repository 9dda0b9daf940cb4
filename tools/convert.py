"""Convert between our datalists and foreign layouts.

    python -m tools.convert nndetection_to_datalist RAW_DIR OUT.json [--validation_fraction 0.2] [--seed 0]
    python -m tools.convert datalist_to_nndetection DATALIST.json OUT_RAW_DIR
    python -m tools.convert luna16_to_datalist annotations.csv SCANS_DIR OUT.json [--validation_fraction 0.2]
    python -m tools.convert predictions_to_luna16 PREDICTIONS.json candidates.csv
"""

from __future__ import annotations

from shared.io.luna16 import export_luna16_candidates, import_luna16
from shared.io.nndetection import export_nndetection, import_nndetection
from tools._cli import check_writable_file, check_writable_folder, run_cli


def nndetection_to_datalist(raw_dir: str, out: str, validation_fraction: float = 0.2, seed: int = 0) -> str:
    """nnDetection task folder → datalist JSON."""
    check_writable_file(out, what="the output datalist")
    data = import_nndetection(raw_dir, out, validation_fraction=float(validation_fraction), seed=int(seed))
    return f"{out}: {len(data['training'])} training, {len(data['validation'])} validation, {len(data['test'])} test"


def datalist_to_nndetection(datalist: str, out: str) -> str:
    """Datalist JSON → nnDetection task folder (boxes-only entries get boxes painted as instance maps)."""
    check_writable_folder(out, what="the output task folder")
    return f"wrote {export_nndetection(datalist, out)}"


def luna16_to_datalist(annotations: str, scans: str, out: str, validation_fraction: float = 0.2, seed: int = 0) -> str:
    """LUNA16 annotations.csv + folder of .mhd scans → datalist JSON."""
    check_writable_file(out, what="the output datalist")
    data = import_luna16(annotations, scans, out, validation_fraction=float(validation_fraction), seed=int(seed))
    return f"{out}: {len(data['training'])} training, {len(data['validation'])} validation"


def predictions_to_luna16(predictions: str, out: str) -> str:
    """Predictions JSON (world cccwhd boxes) → LUNA16 candidates CSV."""
    check_writable_file(out, what="the candidates CSV")
    return f"wrote {export_luna16_candidates(predictions, out)}"


if __name__ == "__main__":
    run_cli({"nndetection_to_datalist": nndetection_to_datalist, "datalist_to_nndetection": datalist_to_nndetection,
             "luna16_to_datalist": luna16_to_datalist, "predictions_to_luna16": predictions_to_luna16})
