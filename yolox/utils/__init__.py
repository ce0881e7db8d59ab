"""YOLOX utilities: boxes and post-processing, checkpoint loading, inference helpers."""
from .boxes import bboxes_iou, cxcywh2xyxy, postprocess, xyxy2cxcywh, xyxy2xywh
from detcore.weights import load_ckpt
from .model_utils import fuse_conv_and_bn, fuse_model, get_model_info

__all__ = [
    "bboxes_iou", "cxcywh2xyxy", "fuse_conv_and_bn", "fuse_model", "get_model_info", "load_ckpt",
    "postprocess", "xyxy2cxcywh", "xyxy2xywh",
]
