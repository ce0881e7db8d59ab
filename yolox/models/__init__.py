"""YOLOX models (backbones, necks, head) and the SimOTA loss."""
from .darknet import CSPDarknet, Darknet
from .network_blocks import BaseConv, Bottleneck, CSPLayer, DWConv, Focus, ResLayer, SPPBottleneck
from .yolo_fpn import YOLOFPN
from .yolo_head import YOLOXHead
from .yolo_pafpn import YOLOPAFPN
from .yolox import YOLOX

__all__ = [
    "BaseConv", "Bottleneck", "CSPDarknet", "CSPLayer", "DWConv", "Darknet", "Focus", "ResLayer",
    "SPPBottleneck", "YOLOFPN", "YOLOPAFPN", "YOLOX", "YOLOXHead",
]
