"""The SPP block's max-pools as one opaque op for torch.compile, so that inductor runs ATen's pools.

Why: for training, inductor (torch 2.14, CPU) lowers a max-pool with indices into its own window
loops that track the argmax (169 reads per output at 13x13), fused with the BN + SiLU before it.
The SPP block of YOLOX-S (20x20, bf16, forward + backward) measured 271 ms compiled that way
against 24 ms eager on a Xeon, and the compiled bf16 step 0.77x eager (``bench/compile_blocks.py``,
``spp_inductor``; docs/performance.md).

A ``torch.library`` custom op is a black box to the compiler: forward and backward call the same
ATen kernels as eager mode (``max_pool2d_with_indices`` and its backward), so values and gradients
are the reference's bit for bit, and the graph does not break (a ``torch.compiler.disable`` here
split every enclosing forward into resume frames: 25 graphs over 5 multi-scale sizes). Eager mode,
ONNX export and torch < 2.4 (no ``torch.library.custom_op``) keep ``nn.MaxPool2d``.
"""
from typing import Tuple

import torch

from yolox.models.tracing import compiling

custom_op = getattr(torch.library, "custom_op", None)


def _padding(k):
    return [k // 2, k // 2]


if custom_op is not None:
    @custom_op("detkit::same_max_pool", mutates_args=())
    def same_max_pool(x: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Stride-1 ``k`` x ``k`` max-pool with ``k // 2`` padding: (values, argmax indices)."""
        return torch.ops.aten.max_pool2d_with_indices(x, [k, k], [1, 1], _padding(k))

    @same_max_pool.register_fake
    def _same_max_pool_fake(x, k):
        # ATen's pools write in the input's memory format (channels_last in, channels_last out)
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.int64)

    @custom_op("detkit::same_max_pool_backward", mutates_args=())
    def same_max_pool_backward(grad: torch.Tensor, x: torch.Tensor, indices: torch.Tensor,
                               k: int) -> torch.Tensor:
        """ATen's max-pool backward: each output's gradient goes to its recorded argmax."""
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [k, k], [1, 1], _padding(k),
                                                               [1, 1], False, indices)

    @same_max_pool_backward.register_fake
    def _same_max_pool_backward_fake(grad, x, indices, k):
        return torch.empty_like(x)

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output[1])
        ctx.k = inputs[1]

    def _backward(ctx, grad, _grad_indices):
        x, indices = ctx.saved_tensors
        return same_max_pool_backward(grad, x, indices, ctx.k), None

    same_max_pool.register_autograd(_backward, setup_context=_setup_context)
else:
    same_max_pool = None


def spp_pools(x, pools):
    """``pools`` (stride-1 ``nn.MaxPool2d`` modules) applied to ``x``: through the opaque op while
    torch.compile traces, through the modules themselves otherwise."""
    if same_max_pool is not None and compiling():
        return [same_max_pool(x, pool.kernel_size)[0] for pool in pools]
    return [pool(x) for pool in pools]
