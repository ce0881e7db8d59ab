"""Conv building blocks shared by the YOLOX backbones, necks and head.

Attribute names (conv, bn, dconv, pconv, conv1..3, m, layer1/2) mirror upstream YOLOX so that
released checkpoints load with strict=True.
"""
import torch
import torch.nn.functional as F
from torch import nn

from yolox.models.spp_pool import spp_pools
from yolox.models.tracing import compiling


def get_activation(name="silu", inplace=True):
    """Map the exp's ``act`` string to a module; unknown names fail loudly.

    SiLU is always out of place, unlike upstream's: its backward needs its input, so under autograd
    an in-place SiLU first clones that input (an ``aten::clone`` inside every ``silu_``; the step's
    ``copy_`` in ``bench/yolox_step.py --profile`` went from 72 to 32 ms of a 1.8 s fp32 YOLOX-S
    step on a Xeon), while out of place it writes its output once. Same kernel, same values. ReLU
    and LeakyReLU stay in place: their backward reads the output."""
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=inplace)
    raise ValueError(f"unsupported activation {name!r} (expected silu, relu or lrelu)")


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x upsampling, as upstream's ``nn.Upsample(scale_factor=2, mode="nearest")``
    (same output, no parameters), whose backward reads a dense gradient.

    Why: the necks concatenate every upsampled map, so autograd hands it a channel slice of the
    concatenation's gradient, and ATen's ``upsample_nearest2d_backward`` takes a slow generic path
    for a strided channels_last slice (YOLOX-S, batch 4, fp32, Xeon: 16 ms at 80x80 and 7 ms at
    40x40, against 1.1 and 0.5 ms with the slice copied dense first; the same gradient bit for
    bit). A hook on the output makes that copy in the input's memory format. Inductor plans its
    own layouts, so nothing is hooked while torch.compile traces, nor without autograd.
    """

    def forward(self, x):
        y = F.interpolate(x, scale_factor=2, mode="nearest")
        if y.requires_grad and not compiling():
            cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            fmt = torch.channels_last if cl else torch.contiguous_format
            y.register_hook(lambda grad: grad.contiguous(memory_format=fmt))
        return y


class BaseConv(nn.Module):
    """Conv2d -> BatchNorm2d -> activation, 'same' padding.

    ``fuse_model`` folds ``bn`` into ``conv`` and swaps ``bn`` for Identity, so forward stays one path.
    """

    def __init__(self, in_channels, out_channels, ksize, stride, groups=1, bias=False, act="silu"):
        super().__init__()
        pad = (ksize - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, stride, pad, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = get_activation(act, inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 (used by YOLOX-nano)."""

    def __init__(self, in_channels, out_channels, ksize, stride=1, act="silu"):
        super().__init__()
        self.dconv = BaseConv(in_channels, in_channels, ksize, stride, groups=in_channels, act=act)
        self.pconv = BaseConv(in_channels, out_channels, 1, 1, act=act)

    def forward(self, x):
        return self.pconv(self.dconv(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 expand, optional residual when channel counts agree."""

    def __init__(self, in_channels, out_channels, shortcut=True, expansion=0.5, depthwise=False, act="silu"):
        super().__init__()
        hidden = int(out_channels * expansion)
        Conv = DWConv if depthwise else BaseConv
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv2 = Conv(hidden, out_channels, 3, 1, act=act)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class ResLayer(nn.Module):
    """Darknet-53 residual unit (always LeakyReLU as in YOLOv3)."""

    def __init__(self, in_channels):
        super().__init__()
        mid = in_channels // 2
        self.layer1 = BaseConv(in_channels, mid, 1, 1, act="lrelu")
        self.layer2 = BaseConv(mid, in_channels, 3, 1, act="lrelu")

    def forward(self, x):
        return x + self.layer2(self.layer1(x))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: max-pools at several sizes concatenated with the input."""

    def __init__(self, in_channels, out_channels, kernel_sizes=(5, 9, 13), activation="silu"):
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=activation)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1, 1, act=activation)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + spp_pools(x, self.m), dim=1))


class CSPLayer(nn.Module):
    """Cross-stage-partial block: half the channels go through bottlenecks, half bypass."""

    def __init__(self, in_channels, out_channels, n=1, shortcut=True, expansion=0.5, depthwise=False, act="silu"):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv2 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1, 1, act=act)
        self.m = nn.Sequential(
            *[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise, act=act) for _ in range(n)]
        )

    def forward(self, x):
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixel blocks to channels) then a conv; channel order as upstream."""

    def __init__(self, in_channels, out_channels, ksize=1, stride=1, act="silu"):
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize, stride, act=act)

    def forward(self, x):
        top_left = x[..., ::2, ::2]
        top_right = x[..., ::2, 1::2]
        bot_left = x[..., 1::2, ::2]
        bot_right = x[..., 1::2, 1::2]
        return self.conv(torch.cat((top_left, bot_left, top_right, bot_right), dim=1))
