"""Inference helpers: conv-BN fusion and model size / FLOPs summary."""
import torch
from torch import nn

from yolox.models.network_blocks import BaseConv


def fuse_conv_and_bn(conv, bn):
    """Fold an eval-mode BatchNorm into the preceding conv: one conv with the same outputs."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(device=conv.weight.device, dtype=conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(False)
    return fused


def fuse_model(model):
    """Fuse every BaseConv's BN into its conv (for inference; the model must not train afterwards)."""
    for m in model.modules():
        if isinstance(m, BaseConv) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            m.bn = nn.Identity()
    return model


def get_model_info(model, tsize):
    """'Params: X.XXM, Gflops: Y.YY' at input ``tsize`` (h, w), FLOPs counted at 64x64 then scaled."""
    stride = 64
    params = sum(p.numel() for p in model.parameters()) / 1e6
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:                      # torch < 2.1 (Habana's older containers)
        return f"Params: {params:.2f}M, Gflops: n/a (needs torch >= 2.1)"
    p = next(model.parameters())
    img = torch.zeros((1, 3, stride, stride), device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(img)
    finally:
        model.train(was_training)
    gflops = counter.get_total_flops() / 1e9 * tsize[0] * tsize[1] / stride / stride
    return f"Params: {params:.2f}M, Gflops: {gflops:.2f}"
