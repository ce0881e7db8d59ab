"""One table of deployment formats: for YOLOX-nano, YOLOX-S and SSD300, every way this repo can
run the same weights on a CPU, with speed, file size and (for trained weights) accuracy.

Formats (rows): PyTorch eager fp32; eager bf16 autocast (only where the CPU has native bf16
kernels: elsewhere it is many times slower and says nothing); TorchScript (traced); ONNX fp32
under onnxruntime; ONNX end-to-end (``--nms``: decoding + NMS in the graph) under onnxruntime;
OpenVINO fp32 (the IR of ``--format openvino``, inference precision f32); INT8 from
``tools/quantize.py``: onnxruntime QDQ under onnxruntime and NNCF under OpenVINO.

Columns: ms per image at batch 1 and images/s at batch 8 (median of ``--repeat`` runs over the
same preprocessed val images; each run is the network plus decoding and NMS: what differs
between formats; reading and resizing are the same numpy/OpenCV code for all and left out);
file size; AP50 and AP50:95 on the shapes val set (``--data``; pycocotools; eval thresholds:
YOLOX conf 0.01 / IoU 0.65, SSD conf 0.05 / IoU 0.5, as the evaluators), only for trained weights
(``--yolox-nano-ckpt``, ``--ssd-ckpt``): seeded random weights give the speed only.
Every runtime gets ``--threads`` intra-op threads (default: torch's count).

Also, per model: ``e2e_check`` (item 1 of the deployment issue: the end-to-end graph's
detections against the PyTorch postprocess on ``--check-images`` val images at batch 1 and 8:
count equality and the largest box / score difference) and ``folder`` (the torch-free demo
pipeline, read + preprocess + ONNX fp32 + postprocess, over ``--folder-images`` images at batch
1 and batch 8, and their ratio).

Also ``int8_goal`` per model and runtime (issue 34: INT8 AP50 within 1.0 point of fp32, INT8 >=
1.5x fp32's images/s at batch 8) and, where a goal is missed, ``int8_profile`` lines: the same batch
of 8 through the runtime's own profiler in fp32 and int8 (onnxruntime: time per op type;
OpenVINO: time per chosen kernel and the share spent in int8 kernels).

Prints JSON lines (``bench/common.emit``) and, at the end, the markdown table docs/deploy.md
carries. ``--quick`` (tiny sizes, 2 repeats, 8 images) checks that it runs.
"""
import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from common import emit, machine

MODELS = ("yolox-nano", "yolox-s", "ssd300")
FORMATS = ("torch_fp32", "torch_bf16", "torchscript", "onnx_fp32", "onnx_e2e", "openvino_fp32",
           "int8_onnxruntime", "int8_openvino")
EVAL = {"yolox": {"conf": 0.01, "nms": 0.65, "max_det": 100}, "ssd": {"conf": 0.05, "nms": 0.5, "max_det": 200}}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="datasets/shapes",
                    help="shapes COCO root (val for AP, train for INT8 calibration)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--yolox-nano-ckpt", default=None, help="trained shapes YOLOX-nano (exps/example/shapes)")
    ap.add_argument("--ssd-ckpt", default=None, help="trained shapes SSD300 (ssd300_latest.pth or iter_N.pt)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--calib-images", type=int, default=100)
    ap.add_argument("--check-images", type=int, default=50)
    ap.add_argument("--folder-images", type=int, default=100)
    ap.add_argument("--ap-images", type=int, default=None, help="val images scored (default: all)")
    ap.add_argument("--quick", action="store_true", help="tiny run that checks the script works")
    ap.add_argument("--workdir", default=None, help="keep the exported files here (default: a temp folder)")
    return ap.parse_args(argv)


# ----------------------------------------------------------------- models and exports

class Subject:
    """One model: its PyTorch module, preprocessing and postprocessing, and its exports."""

    def __init__(self, name, ckpt, data, quick):
        self.name, self.ckpt, self.trained = name, ckpt, ckpt is not None
        self.family = "ssd" if name == "ssd300" else "yolox"
        torch.manual_seed(0)
        if self.family == "ssd":
            from ssd import SSD300
            if ckpt:
                from ssd.demo import load_detector
                self.model, self.names = load_detector(ckpt, torch.device("cpu"))
            else:
                self.model, self.names = SSD300(label_num=81).eval(), None
            self.size = (300, 300)
        else:
            from yolox.exp import get_exp
            if ckpt:
                root = Path(__file__).resolve().parents[1]
                self.exp = get_exp(str(root / "exps" / "example" / "shapes" / "yolox_nano_shapes.py"))
            else:
                self.exp = get_exp(exp_name=name)
            if quick:
                self.exp.test_size = (160, 160)
            self.model = self.exp.get_model().eval()
            if ckpt:
                from yolox.utils import load_ckpt
                load_ckpt(self.model, ckpt)
            self.model.head.decode_in_inference = True
            self.size = tuple(self.exp.test_size)
        self.model.eval()

    # torch side
    def preprocess(self, bgr):
        from detcore.deploy.letterbox import letterbox
        from detcore.deploy.preprocess import ssd_input
        if self.family == "ssd":
            return torch.from_numpy(ssd_input(bgr))
        return torch.from_numpy(letterbox(bgr, self.size)[0][None])

    def torch_post(self, out, infos):
        """Rows per image from the network's output, as the PyTorch demos / evaluators."""
        cfg = EVAL[self.family]
        rows = []
        if self.family == "ssd":
            from ssd import Encoder, dboxes300_coco
            enc = getattr(self, "_enc", None) or Encoder(dboxes300_coco())
            self._enc = enc
            for (boxes, labels, scores), (h, w) in zip(enc.decode_batch(out[0].float(), out[1].float(), cfg["nms"],
                                                                        cfg["max_det"], cfg["conf"]), infos):
                size = torch.tensor([w, h, w, h], dtype=torch.float32)
                px = torch.minimum((boxes.float() * size).clamp(min=0), size)
                rows.append(torch.cat([px, scores.float()[:, None], labels.float()[:, None]], 1).numpy())
            return rows
        from yolox.utils import postprocess
        for det, ratio in zip(postprocess(out.float(), self.exp.num_classes, cfg["conf"], cfg["nms"]), infos):
            det = det[:cfg["max_det"]]
            rows.append(torch.cat([det[:, :4] / ratio, (det[:, 4] * det[:, 5])[:, None], det[:, 6:7]], 1).numpy())
        return rows

    def info(self, bgr):
        if self.family == "ssd":
            return bgr.shape[:2]
        return min(self.size[0] / bgr.shape[0], self.size[1] / bgr.shape[1])

    def export(self, folder, kind):
        """Path of the export ``kind``: raw (plain .onnx), e2e (--nms), ir (OpenVINO of raw),
        torchscript, int8_ort, int8_ov, pth."""
        folder = Path(folder)
        stem = folder / self.name
        cfg = EVAL[self.family]
        if kind == "pth":
            path = stem.with_suffix(".pth")
            torch.save(self.model.state_dict(), path)
            return path
        if kind == "torchscript":
            path = folder / f"{self.name}.torchscript.pt"
            with torch.no_grad():
                traced = torch.jit.trace(self.model, torch.zeros(1, 3, *self.size), check_trace=False)
            traced.save(str(path))
            return path
        if kind in ("raw", "e2e"):
            path = folder / f"{self.name}_{kind}.onnx"
            if self.family == "ssd":
                from detcore.deploy.export_graph import append_nms
                from detcore.deploy.metadata import write_metadata
                from ssd.export_onnx import NmsInputs, export
                names = self.names or [str(i) for i in range(81)]
                if kind == "raw":
                    export(self.model, path)
                    write_metadata(path, "ssd", "raw", names)
                else:
                    export(NmsInputs(self.model).eval(), path, output_names=("nms_boxes", "nms_scores"))
                    append_nms(path, "nms_boxes", "nms_scores", max_det=cfg["max_det"], iou=cfg["nms"],
                               conf=cfg["conf"], box_scale=300.0, class_offset=1, num_classes=len(names))
                    write_metadata(path, "ssd", "nms", names)
            else:
                from yolox.tools.export_onnx import save_onnx
                self.model.head.decode_in_inference = kind == "e2e"
                nms = {"conf": cfg["conf"], "iou": cfg["nms"], "max_det": cfg["max_det"]} if kind == "e2e" else None
                save_onnx(self.model, path, self.size, dynamic=True, onnxsim=False,
                          class_names=getattr(self.exp, "class_names", None), nms=nms)
                self.model.head.decode_in_inference = True
            return path
        raise ValueError(kind)


def size_mb(path):
    path = Path(path)
    extra = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return round((path.stat().st_size + (extra.stat().st_size if extra and extra.is_file() else 0)) / 1e6, 2)


# ----------------------------------------------------------------- runners

def torch_runner(subject, module, bf16=False):
    def run(images):
        x = torch.cat([subject.preprocess(img) for img in images])
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(x)
        return subject.torch_post(out, [subject.info(img) for img in images])

    def net(x):                 # the timed part: network + decode + NMS on a prepared batch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(x)
        return subject.torch_post(out, infos_for(len(x)))

    infos_for = None

    def prepare(images):
        nonlocal infos_for
        infos = [subject.info(img) for img in images]
        infos_for = lambda n: infos[:n]  # noqa: E731
        return torch.cat([subject.preprocess(img) for img in images])
    return run, net, prepare


def runtime_runner(detector):
    infos_holder = {}

    def prepare(images):
        prepared = [detector.preprocess(img) for img in images]
        infos_holder["infos"] = [i for _, i in prepared]
        return np.concatenate([x for x, _ in prepared])

    def net(x):
        outs = detector.infer(x)
        return [detector.postprocess(outs, info, k) for k, info in enumerate(infos_holder["infos"][:len(x)])]
    return detector.detect_batch, net, prepare


def median_s(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ----------------------------------------------------------------- accuracy

def coco_ap(rows_fn, subject, data, limit=None, batch=8):
    """(AP50, AP50:95) of ``rows_fn`` on the val set through pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = Path(data) / "annotations" / "instances_val2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    cats = sorted(gt.getCatIds())
    imgs = sorted(gt.imgs.values(), key=lambda im: im["id"])[:limit]
    results = []
    for start in range(0, len(imgs), batch):
        chunk = imgs[start:start + batch]
        bgrs = [cv2.imread(str(Path(data) / "val2017" / im["file_name"])) for im in chunk]
        for im, rows in zip(chunk, rows_fn(bgrs)):
            for x1, y1, x2, y2, score, cls in np.asarray(rows, dtype=np.float64).tolist():
                k = int(cls) - (1 if subject.family == "ssd" else 0)
                if 0 <= k < len(cats) and np.isfinite([x1, y1, x2, y2, score]).all():
                    results.append({"image_id": im["id"], "category_id": cats[k],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.imgIds = [im["id"] for im in imgs]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return round(100 * float(ev.stats[1]), 2), round(100 * float(ev.stats[0]), 2)


def max_differences(expected, got, sizes):
    """(same counts, max box diff / image size, max score diff) over images, rows matched greedily."""
    same, box, score = True, 0.0, 0.0
    for e, g, (h, w) in zip(expected, got, sizes):
        if len(e) != len(g):
            same = False
            continue
        if not len(e):
            continue
        unit = np.array([w, h, w, h], dtype=np.float64)
        d = np.abs(e[:, None, :4] / unit - g[None, :, :4] / unit).max(axis=2) + np.abs(e[:, None, 4] - g[None, :, 4])
        k = d.argmin(axis=1)
        box = max(box, float(np.abs(e[:, :4] / unit - g[k, :4] / unit).max()))
        score = max(score, float(np.abs(e[:, 4] - g[k, 4]).max()))
    return same, box, score


# ----------------------------------------------------------------- INT8 goals and why

INT8_PAIRS = (("int8_onnxruntime", "onnx_fp32", "onnxruntime"), ("int8_openvino", "openvino_fp32", "openvino"))


def int8_goals(rows):
    """Issue 34's INT8 goals per runtime: AP50 within 1.0 point of fp32 (trained weights only) and
    >= 1.5x fp32's images/s at batch 8, same runtime and threads."""
    by_format = {r["format"]: r for r in rows}
    out = []
    for int8, fp32, runtime in INT8_PAIRS:
        if int8 not in by_format or fp32 not in by_format:
            continue
        a, b = by_format[int8], by_format[fp32]
        speed = a["images_per_s_b8"] / b["images_per_s_b8"]
        goal = {"runtime": runtime, "int8": int8, "fp32": fp32, "speedup_b8": round(speed, 3),
                "speedup_b1": round(b["ms_per_image_b1"] / a["ms_per_image_b1"], 3),
                "speed_goal": 1.5, "speed_status": "met" if speed >= 1.5 else "missed"}
        if "AP50" in a and "AP50" in b:
            drop = b["AP50"] - a["AP50"]
            goal.update(ap50_fp32=b["AP50"], ap50_int8=a["AP50"], ap50_drop_points=round(drop, 2),
                        ap_goal_points=1.0, ap_status="met" if drop <= 1.0 else "missed")
        out.append(goal)
    return out


def ort_profile(path, x, threads, runs=3, top=6):
    """Where onnxruntime spends a batch: total node time per op type (its own profiler,
    ``SessionOptions.enable_profiling``), the ``top`` op types with their share."""
    import json
    import os

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    per_op = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0) + e["dur"]
    total = sum(per_op.values()) or 1
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return {"ms_per_batch": round(total / 1e3 / runs, 2),
            "top_ops": {op: f"{100 * t / total:.0f}% {t / 1e3 / runs:.1f} ms" for op, t in ranked}}


def ov_profile(path, x, threads, runs=3, top=6):
    """Where OpenVINO's CPU plugin spends a batch: per-layer real time (``PERF_COUNT``) summed by
    the kernel it chose (``exec_type``, whose suffix says the precision the layer ran in: I8,
    FP32...), the ``top`` kernels with their share, and the share of time in int8 kernels."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": int(threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    per_kernel = {}
    for _ in range(runs):
        request.infer({0: x})
        for layer in request.get_profiling_info():
            us = layer.real_time.total_seconds() * 1e6
            per_kernel[layer.exec_type] = per_kernel.get(layer.exec_type, 0) + us
    total = sum(per_kernel.values()) or 1
    int8 = sum(t for k, t in per_kernel.items() if "I8" in k.upper() or "U8" in k.upper())
    ranked = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:top]
    return {"ms_per_batch": round(total / 1e3 / runs, 2), "int8_kernel_share": round(int8 / total, 3),
            "top_kernels": {k: f"{100 * t / total:.0f}% {t / 1e3 / runs:.1f} ms" for k, t in ranked}}


# ----------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.repeat, args.calib_images, args.check_images, args.folder_images = 2, 8, 8, 8
        args.ap_images = args.ap_images or 8
    models = [m for m in args.models.split(",") if m]
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(formats) - set(FORMATS))
    if unknown:
        raise SystemExit(f"unknown model or format: {', '.join(unknown)}")
    data = Path(args.data)
    if not (data / "annotations" / "instances_val2017.json").is_file():
        raise SystemExit(f"--data {data}: not a shapes COCO root (python tools/make_shapes.py --out {data})")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)

    from accel.precision import cpu_bf16_is_native
    from detcore.deploy.runtime import Detector
    from detcore.deploy.quantize import quantize

    bf16 = cpu_bf16_is_native()
    emit(bench="formats_machine", **{**machine(), "threads": threads}, bf16_native=bf16)
    val = sorted((data / "val2017").glob("*.jpg"))
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in models:
            ckpt = args.yolox_nano_ckpt if name == "yolox-nano" else args.ssd_ckpt if name == "ssd300" else None
            subject = Subject(name, ckpt, data, args.quick)
            cfg = EVAL[subject.family]
            images8 = [cv2.imread(str(p)) for p in val[:8]]
            exports = {}

            def path_of(kind):
                if kind not in exports:
                    if kind == "ir":
                        from detcore.deploy.export_graph import save_openvino
                        raw = path_of("raw")
                        exports[kind] = save_openvino(raw, raw.with_suffix(".xml"))
                    elif kind == "int8_ort":
                        exports[kind] = quantize(path_of("raw"), work / f"{name}_int8.onnx", data / "train2017",
                                                 args.calib_images, backend="onnxruntime")[0]
                    elif kind == "int8_ov":
                        exports[kind] = quantize(path_of("raw"), work / f"{name}_int8.xml", data / "train2017",
                                                 args.calib_images, backend="openvino")[0]
                    else:
                        exports[kind] = subject.export(work, kind)
                return exports[kind]

            def det(kind, runtime):
                return Detector(path_of(kind), runtime=runtime, threads=threads, conf=cfg["conf"], nms=cfg["nms"])

            builders = {
                "torch_fp32": lambda: (torch_runner(subject, subject.model), path_of("pth")),
                "torch_bf16": lambda: (torch_runner(subject, subject.model, bf16=True), path_of("pth")),
                "torchscript": lambda: (torch_runner(subject, torch.jit.load(str(path_of("torchscript")))),
                                        path_of("torchscript")),
                "onnx_fp32": lambda: (runtime_runner(det("raw", "onnxruntime")), path_of("raw")),
                "onnx_e2e": lambda: (runtime_runner(det("e2e", "onnxruntime")), path_of("e2e")),
                "openvino_fp32": lambda: (runtime_runner(det("ir", "openvino")), path_of("ir")),
                "int8_onnxruntime": lambda: (runtime_runner(det("int8_ort", "onnxruntime")), path_of("int8_ort")),
                "int8_openvino": lambda: (runtime_runner(det("int8_ov", "openvino")), path_of("int8_ov")),
            }
            for fmt in formats:
                if fmt == "torch_bf16" and not bf16:
                    emit(bench="formats", model=name, format=fmt, skipped="no native bf16 kernels on this CPU")
                    continue
                (run, net, prepare), path = builders[fmt]()
                x1, x8 = prepare(images8[:1]), prepare(images8)
                prepare(images8)
                s8 = median_s(lambda: net(x8), args.repeat)
                prepare(images8[:1])
                s1 = median_s(lambda: net(x1), args.repeat)
                row = {"model": name, "format": fmt, "size": f"{subject.size[0]}", "threads": threads,
                       "ms_per_image_b1": round(1e3 * s1, 2), "images_per_s_b8": round(8 / s8, 2),
                       "file_mb": size_mb(path)}
                if subject.trained:
                    row["AP50"], row["AP50_95"] = coco_ap(run, subject, data, args.ap_images)
                emit(bench="formats", **row)
                table.append(row)

            model_rows = [r for r in table if r["model"] == name]
            for goal in int8_goals(model_rows):
                emit(bench="int8_goal", model=name, **goal)
                if goal["speed_status"] == "missed" or goal.get("ap_status") == "missed":
                    # why: the same batch of 8 through each runtime's own profiler, fp32 and int8
                    kinds = {"onnxruntime": ("raw", "int8_ort"), "openvino": ("ir", "int8_ov")}[goal["runtime"]]
                    profile = ort_profile if goal["runtime"] == "onnxruntime" else ov_profile
                    x8 = runtime_runner(det(kinds[0], goal["runtime"]))[2](images8)
                    for precision, kind in zip(("fp32", "int8"), kinds):
                        emit(bench="int8_profile", model=name, runtime=goal["runtime"], precision=precision,
                             batch=8, **profile(path_of(kind), x8, threads))

            if "onnx_e2e" in formats:       # item 1's check: the end-to-end graph vs the PyTorch postprocess
                e2e = Detector(path_of("e2e"), threads=threads)
                imgs = [cv2.imread(str(p)) for p in val[:args.check_images]]
                run_torch = torch_runner(subject, subject.model)[0]
                expected = [r for s in range(0, len(imgs), 8) for r in run_torch(imgs[s:s + 8])]
                sizes = [im.shape[:2] for im in imgs]
                b1 = [e2e(im) for im in imgs]
                b8 = [r for s in range(0, len(imgs), 8) for r in e2e.detect_batch(imgs[s:s + 8])]
                for batch, got in (("1", b1), ("8", b8)):
                    same, box, score = max_differences(expected, got, sizes)
                    emit(bench="e2e_check", model=name, batch=int(batch), images=len(imgs), same_counts=same,
                         detections=int(sum(len(e) for e in expected)), max_box_diff_rel=float(f"{box:.3g}"),
                         max_score_diff=float(f"{score:.3g}"))

            if "onnx_fp32" in formats:      # item 4: a folder through the torch-free demo pipeline
                detector = det("raw", "onnxruntime")
                files = (val * (1 + args.folder_images // max(len(val), 1)))[:args.folder_images]
                timing = {}
                for bs in (1, 8):
                    def folder():
                        for s in range(0, len(files), bs):
                            detector.detect_batch([cv2.imread(str(p)) for p in files[s:s + bs]])
                    timing[bs] = median_s(folder, max(1, args.repeat // 5), warmup=1)
                emit(bench="folder", model=name, images=len(files), threads=threads,
                     images_per_s_b1=round(len(files) / timing[1], 2), images_per_s_b8=round(len(files) / timing[8], 2),
                     ratio_b8_over_b1=round(timing[1] / timing[8], 3))

    print()
    print("| model | format | ms/img (batch 1) | img/s (batch 8) | file MB | AP50 | AP50:95 |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['model']} ({r['size']}) | {r['format']} | {r['ms_per_image_b1']} | {r['images_per_s_b8']} | "
              f"{r['file_mb']} | {r.get('AP50', '-')} | {r.get('AP50_95', '-')} |")
    return table


if __name__ == "__main__":
    main()
