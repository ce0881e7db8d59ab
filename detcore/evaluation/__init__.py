"""Evaluation: one scoring pass for both detectors and every data format.

``coco_eval`` (detections -> rows -> gather -> COCO stats on rank 0 -> broadcast), ``voc_eval`` (the
VOC devkit's AP table), ``class_stats`` (from the same matching: per-class table, P/R/F1 curves,
confusion matrix, per-image errors), ``report`` (the files an evaluation writes, ``--analyze``) and
``plots`` (drawing what was computed; nothing is computed there)."""
