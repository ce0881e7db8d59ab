"""YOLOX single-image inference latency at 640 on CPU: fp32, fused conv-BN, channels_last, bf16.

Each variant adds to the previous one; the JSON lines carry the max abs difference of the raw
predictions against plain fp32 so a speed-up that changes the answer is visible.
"""
import argparse

import torch

from common import emit, machine, time_median

from yolox.exp import get_exp  # noqa: E402
from yolox.utils import fuse_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", default="yolox-s")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = get_exp(None, args.name).get_model().eval()
    image = torch.rand(1, 3, args.size, args.size)
    emit(bench="infer_machine", **machine())
    with torch.inference_mode():
        base_out = model(image)

        def measure(variant, m, x, autocast=False):
            def run():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    return m(x)
            secs = time_median(run, repeat=args.repeat, warmup=2)
            diff = (run().float() - base_out).abs().max().item()
            emit(bench="yolox_infer", model=args.name, size=args.size, variant=variant,
                 latency_ms=round(secs * 1e3, 2), max_abs_diff_vs_fp32=round(diff, 5))

        measure("fp32", model, image)
        fused = fuse_model(model)
        measure("fp32+fuse", fused, image)
        cl = fused.to(memory_format=torch.channels_last)
        cl_image = image.contiguous(memory_format=torch.channels_last)
        measure("fp32+fuse+channels_last", cl, cl_image)
        measure("bf16+fuse+channels_last", cl, cl_image, autocast=True)


if __name__ == "__main__":
    main()
