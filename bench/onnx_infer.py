"""Single-image CPU inference throughput of the networks the demos run: PyTorch eager (NCHW fp32),
PyTorch channels_last fp32, channels_last + bf16 autocast, and onnxruntime on the exported graph
(what ``tools/demo.py --onnx`` runs), for YOLOX-nano at 416, YOLOX-s at 640 and SSD300-ResNet34
at 300.

The network alone, batch 1, seeded random weights (speed does not depend on them): pre- and
post-processing are small next to it and the same numpy/OpenCV code either way. YOLOX is timed
and exported with the raw map output (upstream's export default), SSD with (locs, confs). Every
line carries images/s, the median latency and the max abs difference of the outputs against eager
fp32, so a speed-up that changes the answer shows (untrained networks' outputs vary little, so it
is a sanity check here, not an accuracy figure); the machine line says whether this CPU has
native bf16 kernels (without them bf16 autocast is many times slower than fp32, which is why the
demo runs fp32 unless asked). onnxruntime runs with as many intra-op threads as torch.
"""
import argparse
import tempfile
from pathlib import Path

import torch

from common import emit, machine, time_median

VARIANTS = ("torch_fp32", "torch_channels_last", "torch_channels_last_bf16", "onnxruntime")
MODELS = {"yolox-nano": 416, "yolox-s": 640, "ssd300": 300}


def build(name):
    """(eval model, example input) with seeded random weights."""
    torch.manual_seed(0)
    if name == "ssd300":
        from ssd import SSD300

        return SSD300(label_num=81).eval(), torch.randn(1, 3, 300, 300)
    from yolox.exp import get_exp

    model = get_exp(exp_name=name).get_model().eval()
    model.head.decode_in_inference = False      # the raw map, as the default export
    size = MODELS[name]
    return model, torch.rand(1, 3, size, size) * 255


def export(name, model, folder):
    path = Path(folder) / f"{name}.onnx"
    if name == "ssd300":
        from ssd.export_onnx import export as export_ssd

        export_ssd(model, path)
    else:
        from yolox.tools.export_onnx import export as export_yolox

        export_yolox(model, path, (MODELS[name], MODELS[name]))
    return path


def flat(outputs):
    """The model's outputs as one float tensor (SSD returns two maps)."""
    if isinstance(outputs, (tuple, list)):
        return torch.cat([o.float().reshape(-1) for o in outputs])
    return outputs.float().reshape(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown model or variant: {', '.join(unknown)}")

    import onnxruntime as ort

    from accel.precision import cpu_bf16_is_native

    threads = torch.get_num_threads()
    emit(bench="onnx_infer_machine", **machine(), onnxruntime=ort.__version__, bf16_native=cpu_bf16_is_native())
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            model, x = build(name)
            # exported before timing: the tracer cannot run under inference_mode
            path = export(name, model, folder) if "onnxruntime" in variants else None
            with torch.inference_mode():
                base = flat(model(x))

                def measure(variant, run):
                    secs = time_median(run, repeat=args.repeat, warmup=2)
                    diff = (flat(run()) - base).abs().max().item()
                    emit(bench="onnx_infer", model=name, size=x.shape[-1], variant=variant, threads=threads,
                         images_per_s=round(1.0 / secs, 2), latency_ms=round(secs * 1e3, 1),
                         max_abs_diff_vs_fp32=float(f"{diff:.3g}"))

                if "torch_fp32" in variants:
                    measure("torch_fp32", lambda: model(x))
                if path is not None:
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = threads
                    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    feed = {session.get_inputs()[0].name: x.numpy()}
                    measure("onnxruntime", lambda: [torch.from_numpy(o) for o in session.run(None, feed)])
                cl_model = model.to(memory_format=torch.channels_last)
                cl_x = x.contiguous(memory_format=torch.channels_last)
                if "torch_channels_last" in variants:
                    measure("torch_channels_last", lambda: cl_model(cl_x))
                if "torch_channels_last_bf16" in variants:
                    def bf16():
                        with torch.autocast("cpu", dtype=torch.bfloat16):
                            return cl_model(cl_x)
                    measure("torch_channels_last_bf16", bf16)

if __name__ == "__main__":
    main()
