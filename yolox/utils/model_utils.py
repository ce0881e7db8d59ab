"""Model helpers: conv-BN fusion, model size / FLOPs summary, and freezing for fine-tuning
(upstream HEAD's ``freeze_module`` / ``adjust_status``)."""
import contextlib
import types

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


def _frozen_train(self, mode=True):
    """``train`` of a frozen module: it and its children stay in eval mode (BatchNorm keeps its
    running statistics, dropout stays off) whatever ``model.train()`` asks."""
    return nn.Module.train(self, False)


def freeze_module(module, name=None):
    """Freeze ``module`` in place (upstream HEAD's semantics): its parameters get
    ``requires_grad=False`` and its submodules go to eval mode; with ``name``, only the parameters
    and submodules whose qualified name contains ``name`` (e.g. ``freeze_module(model, "backbone")``).

    Unlike upstream, a frozen submodule also stays in eval mode through later ``model.train()``
    calls (the trainer's included), so frozen BatchNorm statistics do not move either.
    """
    for param_name, param in module.named_parameters():
        if name is None or name in param_name:
            param.requires_grad_(False)
    for module_name, sub in module.named_modules():
        if name is None or name in module_name:
            sub.train = types.MethodType(_frozen_train, sub)
            sub.eval()
    return module


def is_frozen(module):
    """Whether ``freeze_module`` froze this module (it stays in eval mode)."""
    train = module.__dict__.get("train")
    return getattr(train, "__func__", None) is _frozen_train


def frozen_state_keys(model):
    """State-dict keys that ``freeze_module`` froze: frozen parameters and the buffers of frozen
    modules. They never change, so the EMA leaves them alone (averaging a constant can still
    move it by a rounding step)."""
    keys = {name for name, p in model.named_parameters() if not p.requires_grad}
    for mod_name, sub in model.named_modules():
        if is_frozen(sub):
            prefix = f"{mod_name}." if mod_name else ""
            keys.update(prefix + b for b, _ in sub.named_buffers(recurse=False))
    return keys


@contextlib.contextmanager
def adjust_status(module, training=False):
    """Put ``module`` and all its submodules in training (``True``) or eval mode for the ``with``
    block, then give every submodule its own mode back (upstream HEAD's ``adjust_status``)."""
    saved = {m: m.training for m in module.modules()}
    for m in saved:
        m.training = training
    try:
        yield module
    finally:
        for m, mode in saved.items():
            m.training = mode
