"""Embedded synthetic detection data sets, deterministic from a seed (see ``docs/data.md``).

``lung_ct``: procedural chest CT with real LIDC-IDRI nodule shapes, benign vs malignant.
``lung_nodules``: the same scans, every nodule in one class (LUNA16's task: nodule vs background).
``brain_mri``: two-channel MRI from the MNI152 templates with metastasis-like lesions.
:func:`make_dataset` writes a whole data set; :func:`make_case` makes one case in memory.
"""

from shared.data.synthetic.case import Case, TaskSpec
from shared.data.synthetic.dataset import TASKS, case_rng, is_empty_case, make_case, make_dataset

__all__ = ["Case", "TaskSpec", "TASKS", "case_rng", "is_empty_case", "make_case", "make_dataset"]
