"""YOLOX detector = backbone/neck + head."""
from torch import nn

from .yolo_head import YOLOXHead
from .yolo_pafpn import YOLOPAFPN


class YOLOX(nn.Module):
    """``model(images, targets)`` -> loss dict in train mode; ``model(images)`` -> predictions in eval."""

    def __init__(self, backbone=None, head=None):
        super().__init__()
        self.backbone = backbone if backbone is not None else YOLOPAFPN()
        self.head = head if head is not None else YOLOXHead(80)

    def forward(self, x, targets=None):
        return self.head(self.backbone(x), targets)
