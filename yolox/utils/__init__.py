"""YOLOX utilities: boxes and post-processing, checkpoint loading, inference helpers."""
from detcore.boxes import cxcywh2xyxy, xyxy2cxcywh, xyxy2xywh  # upstream YOLOX's names, kept importable here
from .boxes import bboxes_iou, postprocess
from detcore.training.weights import load_ckpt
from .model_utils import (adjust_status, freeze_module, frozen_state_keys, fuse_conv_and_bn, fuse_model,
                          get_model_info, is_frozen)

__all__ = [
    "adjust_status", "bboxes_iou", "cxcywh2xyxy", "freeze_module", "frozen_state_keys", "fuse_conv_and_bn",
    "fuse_model", "get_model_info", "is_frozen", "load_ckpt", "postprocess", "xyxy2cxcywh", "xyxy2xywh",
]
