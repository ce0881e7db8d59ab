"""FPN neck for the YOLOv3 baseline (Darknet-53 backbone, outputs at strides 8/16/32)."""
import torch
from torch import nn

from .darknet import Darknet
from .network_blocks import BaseConv, Upsample2x


def _cbl(in_channels, out_channels, ksize):
    return BaseConv(in_channels, out_channels, ksize, stride=1, act="lrelu")


def _embedding(filters, in_filters):
    return nn.Sequential(
        _cbl(in_filters, filters[0], 1),
        _cbl(filters[0], filters[1], 3),
        _cbl(filters[1], filters[0], 1),
        _cbl(filters[0], filters[1], 3),
        _cbl(filters[1], filters[0], 1),
    )


class YOLOFPN(nn.Module):
    """Darknet backbone (as ``self.backbone``) with two upsample-and-concat stages."""

    def __init__(self, depth=53, in_features=("dark3", "dark4", "dark5")):
        super().__init__()
        self.backbone = Darknet(depth)
        self.in_features = in_features
        self.out1_cbl = _cbl(512, 256, 1)
        self.out1 = _embedding([256, 512], 512 + 256)
        self.out2_cbl = _cbl(256, 128, 1)
        self.out2 = _embedding([128, 256], 256 + 128)
        self.upsample = Upsample2x()

    def forward(self, x):
        features = self.backbone(x)
        x2, x1, x0 = (features[f] for f in self.in_features)
        out_dark4 = self.out1(torch.cat([self.upsample(self.out1_cbl(x0)), x1], 1))
        out_dark3 = self.out2(torch.cat([self.upsample(self.out2_cbl(out_dark4)), x2], 1))
        return out_dark3, out_dark4, x0
