"""torch.compile (inductor) against eager, one YOLOX-S block at a time: where a compiled training
step on CPU gains or loses.

Each row: forward + backward of one block in training mode at its YOLOX-S shape (batch 4 at 640,
channels_last), fp32 or bf16 autocast, median over ``--repeat`` calls of eager and of compiled,
their ratio, and the compilation time of the first compiled call. The blocks: the stem's
Conv-BN-SiLU (12 -> 32 channels at 320x320), a stride-1 Conv-BN-SiLU at 160x160 (64 channels), and
the SPP block at 20x20 (512 channels) twice: as shipped (its pools one opaque op that runs ATen's
kernels, yolox/models/spp_pool.py) and with inductor lowering the pools itself (``spp_inductor``).
"""
import argparse

import torch

from common import emit, machine, time_median

from accel.policy import compile_model  # noqa: E402  (common.py put the repo on sys.path)
from yolox.models import spp_pool  # noqa: E402
from yolox.models.network_blocks import BaseConv, SPPBottleneck  # noqa: E402

BLOCKS = {   # name: (module factory, input channels, input size)
    "stem_conv": (lambda: BaseConv(12, 32, 3, 1), 12, 320),
    "conv_160": (lambda: BaseConv(64, 64, 3, 1), 64, 160),
    "spp": (lambda: SPPBottleneck(512, 512), 512, 20),
    "spp_inductor": (lambda: SPPBottleneck(512, 512), 512, 20),
}


def time_block(name, mode, repeat, compiled):
    """Median seconds of forward + backward and the first call's seconds (compilation included)."""
    factory, channels, size = BLOCKS[name]
    torch.manual_seed(0)
    block = factory().train().to(memory_format=torch.channels_last)
    x = torch.randn(4, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.no_grad():
        # a channels_last output gradient, as the block's gradient arrives in the network; a loss
        # such as out.square().mean() hands back an NCHW one and measures layout conversions instead
        grad = torch.randn_like(block(x))
    forward = compile_model(block, "cpu") if compiled else block  # the trainer's options
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32

    def call():
        with torch.autocast("cpu", dtype=dtype, enabled=mode == "bf16"):
            out = forward(x)
        out.backward(grad.to(out.dtype))

    first = []
    secs = time_median(call, repeat=repeat, warmup=2, first=first)
    return secs, first[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", default=",".join(BLOCKS), help=f"comma list of {', '.join(BLOCKS)}")
    ap.add_argument("--modes", default="fp32,bf16", help="comma list of fp32, bf16")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    blocks, modes = args.blocks.split(","), args.modes.split(",")
    if set(blocks) - set(BLOCKS) or set(modes) - {"fp32", "bf16"}:
        ap.error(f"--blocks from {', '.join(BLOCKS)}; --modes from fp32, bf16")
    emit(bench="compile_blocks_machine", **machine())
    shipped = spp_pool.same_max_pool
    for name in blocks:
        # without the opaque op, spp_pools hands the plain nn.MaxPool2d modules to dynamo
        spp_pool.same_max_pool = None if name == "spp_inductor" else shipped
        for mode in modes:
            torch._dynamo.reset()
            eager, _ = time_block(name, mode, args.repeat, compiled=False)
            compiled, first = time_block(name, mode, args.repeat, compiled=True)
            emit(bench="compile_blocks", block=name, mode=mode, eager_ms=round(eager * 1e3, 2),
                 compiled_ms=round(compiled * 1e3, 2), compiled_vs_eager=round(eager / compiled, 3),
                 compile_s=round(first, 1))
    spp_pool.same_max_pool = shipped


if __name__ == "__main__":
    main()
