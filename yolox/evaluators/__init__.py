"""COCO-style and Pascal VOC evaluation for YOLOX."""
from yolox.evaluators.coco_evaluator import COCOEvaluator, coco_summary, detections_to_rows
from yolox.evaluators.voc_evaluator import VOCEvaluator

__all__ = ["COCOEvaluator", "VOCEvaluator", "coco_summary", "detections_to_rows"]
