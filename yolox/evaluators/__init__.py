"""COCO-style evaluation for YOLOX."""
from yolox.evaluators.coco_evaluator import COCOEvaluator, coco_summary, detections_to_rows

__all__ = ["COCOEvaluator", "coco_summary", "detections_to_rows"]
