"""Detection evaluation: matching, AP/mAP/AR/mAR, FROC, LUNA16 CPM, bootstrap intervals and rankings.

Import the submodule you need (this ``__init__`` imports nothing, so e.g. matplotlib is only loaded by
``shared.metrics.plots``):

- ``matching.match_detections`` -> ``records.MatchRecord`` (per-detection match results, the only input
  of every metric);
- ``detection_metrics.compute_detection_metrics`` (the metrics dict), ``metric_table`` (the same under
  bootstrap weights);
- ``bootstrap.bootstrap_metric_draws`` / ``confidence_intervals`` / ``bootstrap_ranking``;
- ``luna16.evaluate_luna16``; ``ignite.DetectionMetrics`` (validation during training);
- ``inputs`` (datalist / predictions files), ``report`` and ``plots`` (outputs);
- ``evaluation.evaluate_detections`` / ``evaluate_luna16_files`` / ``compare_runs``: a whole evaluation
  from files to ``metrics.json``, ``report.md`` and plots (what ``tools/evaluate.py`` runs);
- ``errors.EvaluationInputError`` (a ``shared.io.errors.InputError``) for bad input.
"""
