"""SSD300 with a ResNet-34 backbone, API-compatible with the MLPerf single_stage_detector reference."""
from ssd.anchors import DefaultBoxes, dboxes300_coco
from ssd.encoder import Encoder
from ssd.loss import Loss
from ssd.model import SSD300

__all__ = ["SSD300", "DefaultBoxes", "dboxes300_coco", "Encoder", "Loss"]
