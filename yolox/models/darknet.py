"""Backbones: Darknet-21/53 (YOLOv3) and CSPDarknet (YOLOX), returning named stage outputs."""
from torch import nn

from .network_blocks import BaseConv, CSPLayer, DWConv, Focus, ResLayer, SPPBottleneck


def _stage_outputs(backbone, x):
    """Run stem and dark2..dark5 in order; return the stages named in ``out_features``."""
    outputs = {}
    for name in ("stem", "dark2", "dark3", "dark4", "dark5"):
        x = getattr(backbone, name)(x)
        if name in backbone.out_features:
            outputs[name] = x
    return outputs


class Darknet(nn.Module):
    """Darknet-53 (or 21) with the SPP block on dark5, as in upstream YOLOX's YOLOv3 baseline."""

    depth2blocks = {21: [1, 2, 2, 1], 53: [2, 8, 8, 4]}

    def __init__(self, depth=53, in_channels=3, stem_out_channels=32, out_features=("dark3", "dark4", "dark5")):
        super().__init__()
        if depth not in self.depth2blocks:
            raise ValueError(f"Darknet depth must be one of {sorted(self.depth2blocks)}, got {depth}")
        self.out_features = out_features
        self.stem = nn.Sequential(
            BaseConv(in_channels, stem_out_channels, 3, 1, act="lrelu"),
            *self._group(stem_out_channels, num_blocks=1, stride=2),
        )
        ch = stem_out_channels * 2
        blocks = self.depth2blocks[depth]
        self.dark2 = nn.Sequential(*self._group(ch, blocks[0], stride=2))
        ch *= 2
        self.dark3 = nn.Sequential(*self._group(ch, blocks[1], stride=2))
        ch *= 2
        self.dark4 = nn.Sequential(*self._group(ch, blocks[2], stride=2))
        ch *= 2
        self.dark5 = nn.Sequential(*self._group(ch, blocks[3], stride=2), *self._spp_block([ch, ch * 2], ch * 2))

    @staticmethod
    def _group(in_channels, num_blocks, stride):
        """Strided 3x3 conv doubling channels, then residual units."""
        return [
            BaseConv(in_channels, in_channels * 2, 3, stride, act="lrelu"),
            *[ResLayer(in_channels * 2) for _ in range(num_blocks)],
        ]

    @staticmethod
    def _spp_block(filters, in_filters):
        return [
            BaseConv(in_filters, filters[0], 1, 1, act="lrelu"),
            BaseConv(filters[0], filters[1], 3, 1, act="lrelu"),
            SPPBottleneck(filters[1], filters[0], activation="lrelu"),
            BaseConv(filters[0], filters[1], 3, 1, act="lrelu"),
            BaseConv(filters[1], filters[0], 1, 1, act="lrelu"),
        ]

    def forward(self, x):
        return _stage_outputs(self, x)


class CSPDarknet(nn.Module):
    """YOLOX backbone: Focus stem + 4 CSP stages; depth/width multipliers set the model size."""

    def __init__(self, dep_mul, wid_mul, out_features=("dark3", "dark4", "dark5"), depthwise=False, act="silu"):
        super().__init__()
        self.out_features = out_features
        Conv = DWConv if depthwise else BaseConv
        base = int(wid_mul * 64)
        base_depth = max(round(dep_mul * 3), 1)
        self.stem = Focus(3, base, ksize=3, act=act)
        self.dark2 = nn.Sequential(
            Conv(base, base * 2, 3, 2, act=act),
            CSPLayer(base * 2, base * 2, n=base_depth, depthwise=depthwise, act=act),
        )
        self.dark3 = nn.Sequential(
            Conv(base * 2, base * 4, 3, 2, act=act),
            CSPLayer(base * 4, base * 4, n=base_depth * 3, depthwise=depthwise, act=act),
        )
        self.dark4 = nn.Sequential(
            Conv(base * 4, base * 8, 3, 2, act=act),
            CSPLayer(base * 8, base * 8, n=base_depth * 3, depthwise=depthwise, act=act),
        )
        self.dark5 = nn.Sequential(
            Conv(base * 8, base * 16, 3, 2, act=act),
            SPPBottleneck(base * 16, base * 16, activation=act),
            CSPLayer(base * 16, base * 16, n=base_depth, shortcut=False, depthwise=depthwise, act=act),
        )

    def forward(self, x):
        return _stage_outputs(self, x)
