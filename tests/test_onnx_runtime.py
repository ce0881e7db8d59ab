"""detcore/deploy/runtime.py (numpy + onnxruntime, no torch): an exported YOLOX or SSD300 gives the
PyTorch demo's boxes, scores and classes on the shapes val images (within 1e-3 after NMS), raw and
decoded exports alike; its pieces equal their PyTorch counterparts (default boxes, SSD input, NMS);
a .onnx that is not a detector is one line; importing it and running `tools/demo.py --onnx`
load no torch."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import batched_nms, nms as tv_nms

from accel import Precision
from accel.errors import UserError
from detcore.deploy import metadata, postprocess, preprocess
from detcore.deploy import runtime as rt
from detcore.deploy.postprocess import nms
from yolox_tools import ROOT, SHAPES_EXP, detecting_nano, detecting_ssd_checkpoint, load_tool

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

N_IMAGES = 4            # YOLOX; SSD300's ResNet-34 is ~10x the work: 3 images
SSD_IMAGES = 3
YOLOX_SIZE = 256
CPU = torch.device("cpu")


def assert_same_detections(expected, got, width, height, atol=1e-3):
    """Same rows (x1, y1, x2, y2, score, class) up to order: each expected row has exactly one
    partner within ``atol`` in every column, box coordinates in units of the image's width and
    height (two near-equal scores may come out in either order). Pixels would be too strict a
    unit: onnxruntime's and PyTorch's fp32 convolutions differ by ~1e-4 relative on these
    calibrated random networks, up to ~0.1 px on a box several hundred pixels wide."""
    assert len(expected) > 0, "the PyTorch path found nothing: the comparison would be empty"
    assert got.shape == expected.shape, (got.shape, expected.shape)
    unit = np.array([width, height, width, height, 1, 1], dtype=np.float32)
    expected, got = expected / unit, got / unit
    dist = np.abs(expected[:, None, :] - got[None, :, :]).max(axis=2)
    partner = dist.argmin(axis=1)
    assert dist[np.arange(len(expected)), partner].max() <= atol, dist.min(axis=1).max()
    assert len(set(partner.tolist())) == len(expected)


@pytest.fixture(scope="module")
def val_images(shapes_coco):
    return sorted((shapes_coco / "val2017").glob("*.jpg"))


@pytest.fixture(scope="module")
def yolox_exports(val_images, tmp_path_factory):
    """(exp, model, {"raw": path, "decoded": path}): the 4-class shapes YOLOX-nano that detects
    without training (``detecting_nano``), exported at 256 both ways through tools/export_onnx.py."""
    from detcore.training.checkpoints import save_atomic

    exp, model = detecting_nano(val_images, YOLOX_SIZE)
    folder = tmp_path_factory.mktemp("yolox_onnx")
    save_atomic({"model": model.state_dict()}, folder / "nano.pth")
    paths = {}
    for kind in ("raw", "decoded"):
        paths[kind] = folder / f"nano_{kind}.onnx"
        load_tool("export_onnx").main(
            ["-f", SHAPES_EXP, "-c", str(folder / "nano.pth"), "--output-name", str(paths[kind])]
            + (["--decode_in_inference"] if kind == "decoded" else []) + ["test_size", f"{YOLOX_SIZE},{YOLOX_SIZE}"])
    model.head.decode_in_inference = True
    return exp, model, paths


@pytest.fixture(scope="module")
def ssd_exports(val_images, tmp_path_factory):
    """(checkpoint, {"raw": path, "decoded": path}): a seeded 5-label SSD300 calibrated on the val
    images, exported both ways through ssd/export_onnx.py."""
    from ssd.export_onnx import main as export_main

    ckpt = detecting_ssd_checkpoint(val_images[:4], tmp_path_factory.mktemp("ssd_onnx"))
    folder = ckpt.parent
    paths = {}
    for kind in ("raw", "decoded"):
        paths[kind] = folder / f"ssd_{kind}.onnx"
        export_main(["--checkpoint", str(ckpt), "--output-name", str(paths[kind])]
                    + (["--decode"] if kind == "decoded" else []))
    return ckpt, paths


@pytest.mark.parametrize("kind", ["raw", "decoded"])
def test_yolox_onnx_boxes_equal_the_pytorch_demo(yolox_exports, val_images, kind):
    exp, model, paths = yolox_exports
    conf, nms = 0.3, 0.45
    exp.test_conf, exp.nmsthre = conf, nms
    predictor = load_tool("demo").Predictor(model, exp, CPU, Precision(CPU, "fp32"))
    detector = rt.Detector(paths[kind], conf=conf, nms=nms)
    assert (detector.kind, detector.output, detector.input_size) == ("yolox", kind, (YOLOX_SIZE, YOLOX_SIZE))
    assert detector.names == list(exp.class_names)      # stored in the model by the exporter
    counts = []
    for path in val_images[:N_IMAGES]:
        img = cv2.imread(str(path))
        expected, got = predictor(img.copy()), detector(img.copy())
        assert_same_detections(expected, got, img.shape[1], img.shape[0])
        counts.append(len(got))
    assert len(set(counts)) > 1, counts                 # the boxes depend on the image


@pytest.mark.parametrize("kind", ["raw", "decoded"])
def test_ssd_onnx_boxes_equal_the_pytorch_demo(ssd_exports, val_images, kind):
    from ssd.demo import Predictor, load_detector

    ckpt, paths = ssd_exports
    conf, nms = 0.3, 0.5
    net, names = load_detector(ckpt, CPU)
    predictor = Predictor(net, CPU, conf, nms)
    detector = rt.Detector(paths[kind], conf=conf, nms=nms)
    assert (detector.kind, detector.output, detector.names) == ("ssd", kind, names)
    for path in val_images[:SSD_IMAGES]:
        with Image.open(path) as img:
            expected = predictor(img.convert("RGB"))
            width, height = img.size
        assert_same_detections(expected, detector(cv2.imread(str(path))), width, height)


def test_ssd_default_boxes_and_input_equal_pytorch(val_images):
    from ssd import dboxes300_coco
    from ssd.data import to_normalised_tensor

    np.testing.assert_array_equal(postprocess.ssd_default_boxes(), dboxes300_coco()(order="xywh").numpy())
    for path in val_images[:3]:
        with Image.open(path) as img:
            expected = to_normalised_tensor(img.convert("RGB"))[None].numpy()
        np.testing.assert_array_equal(preprocess.ssd_input(cv2.imread(str(path))), expected)


def test_numpy_resize_without_pillow_matches_pillow(monkeypatch):
    """The fallback for a deployment without Pillow: its filter equals Pillow's along one axis,
    and is within one grey level for both (Pillow picks the order of its two passes itself)."""
    rng = np.random.default_rng(0)
    monkeypatch.setattr(preprocess, "_pillow", lambda: None)
    for h, w, oh, ow in [(456, 373, 456, 300), (456, 373, 300, 373), (283, 456, 300, 300), (640, 480, 300, 300)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR)).astype(int)
        got = preprocess.pil_bilinear_resize(img, (oh, ow)).astype(int)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= (0 if (h == oh or w == ow) else 1)


def test_nms_equals_torchvision_batched_nms():
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (400, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (400, 2))], axis=1).astype(np.float32)
    boxes[:3] = [10, 10, 10, 30]            # zero-area boxes: IoU 0/0 suppresses nothing (torchvision)
    scores = rng.permutation(400).astype(np.float32) / 400
    classes = rng.integers(0, 3, 400)
    for thr in (0.3, 0.5):
        expected = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), thr)
        got = postprocess.nms(boxes, scores, thr, classes=classes)
        np.testing.assert_array_equal(got, expected.numpy())
        assert {0, 1, 2} <= set(got.tolist())        # the degenerate boxes survive
        agnostic = postprocess.nms(boxes, scores, thr)
        assert len(agnostic) < len(got)      # across classes more boxes overlap


def _graph(path, inputs, outputs):
    """A tiny .onnx passing its first input through to every output (shapes as declared)."""
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    nodes = [helper.make_node("Identity", [inputs[0][0]], [n]) for n, _ in outputs]
    model = helper.make_model(helper.make_graph(nodes, "not_a_detector", ins, outs),
                              opset_imports=[helper.make_opsetid("", 11)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("inputs, outputs, says", [
    ([("x", [1, 3, 64, 64])], [("y", [1, 3, 64, 64])], "expected a YOLOX map [N, 84, 5+C]"),
    ([("x", [1, 1, 64, 64])], [("y", [1, 1, 64, 64])], "expected a float image batch [N, 3, H, W]"),
    ([("x", [1, 3, 300, 300])], [("a", [1, 3, 300, 300]), ("b", [1, 3, 300, 300])], "SSD300"),
    ([("x", [1, 3, 64, 64]), ("s", [1])], [("y", [1, 3, 64, 64])], "takes 2 inputs"),
    ([("x", [1, 3, "h", "w"])], [("y", [1, 3, "h", "w"])], "no fixed height and width"),
])
def test_a_non_detector_onnx_is_one_line(tmp_path, inputs, outputs, says):
    path = _graph(tmp_path / "other.onnx", inputs, outputs)
    with pytest.raises(UserError) as info:
        rt.Detector(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and says in text, text
    assert "not a YOLOX or SSD300 export" in text


def test_demo_onnx_imports_no_torch_and_bad_files_are_one_line(yolox_exports, val_images, tmp_path):
    """In a fresh interpreter: importing the runtime and running `tools/demo.py image --onnx ...`
    load no torch and write the drawn images; a file onnxruntime cannot read and a non-detector
    .onnx end the CLI with exit 2 and one stderr line."""
    _, _, paths = yolox_exports
    out = tmp_path / "out"
    script = f"""
import runpy, sys
import detcore.deploy.runtime
assert "torch" not in sys.modules, "importing detcore.deploy.runtime loaded torch"
sys.argv = ["demo.py", "image", "--onnx", {str(paths['raw'])!r}, "--path", {str(val_images[0].parent)!r},
            "--save_result", "--output_dir", {str(out)!r}, "--conf", "0.3", "--nms", "0.45"]
runpy.run_path({str(ROOT / 'tools' / 'demo.py')!r}, run_name="__main__")
print("TORCH_LOADED", "torch" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH_LOADED False" in proc.stdout
    drawn = sorted((out / "nano_raw" / "vis_res").rglob("*.jpg"))
    assert [p.name for p in drawn] == [p.name for p in val_images]
    counts = [int(line.split(": ")[1].split()[0]) for line in proc.stdout.splitlines() if " detections in " in line]
    assert len(counts) == len(val_images) and sum(counts) > 0

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01 this is not a protobuf of a model")
    other = _graph(tmp_path / "other.onnx", [("x", [1, 3, 64, 64])], [("y", [1, 3, 64, 64])])
    for bad, says in ((junk, "onnxruntime cannot load it"), (other, "not a YOLOX or SSD300 export"),
                      (tmp_path / "missing.onnx", "does not exist")):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "image", "--onnx", str(bad),
                               "--path", str(val_images[0])], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: --onnx ") and str(bad) in lines[0] and says in lines[0]


def test_metadata_names_and_overrides(yolox_exports):
    _, _, paths = yolox_exports
    meta = ort.InferenceSession(str(paths["decoded"]), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert meta.custom_metadata_map[metadata.META_OUTPUT] == "decoded"
    assert json.loads(meta.custom_metadata_map[metadata.META_NAMES]) == ["circle", "rectangle", "triangle", "star"]
    assert rt.Detector(paths["raw"], class_names="a,b,c,d").names == ["a", "b", "c", "d"]
    with pytest.raises(UserError, match="--class_names has 2 names; .* has 4 classes"):
        rt.Detector(paths["raw"], class_names="a,b")


def test_coco_names_are_the_fallback_for_80_classes():
    """An 80-class YOLOX file without stored names (upstream's export) is labelled with COCO's
    names, read from yolox/data/datasets/coco_classes.py beside the package without importing torch."""
    names = metadata.coco_class_names()
    assert len(names) == 80 and names[:3] == ["person", "bicycle", "car"] and names[-1] == "toothbrush"


# --------------------------------------------------------------------- NMS at exactly the threshold
# The runtime's NMS (``detcore.deploy.postprocess.nms``) suppresses only IoU strictly above the
# threshold, as ``torchvision.ops.nms``: a box at exactly the threshold survives. Every IoU below
# is a ratio of small integers, exact in floating point.
# A (score .9) is 10 x 10. B = A's top half: IoU(A, B) = 50/100 = 0.5. C = A's bottom half:
# IoU(A, C) = 0.5, IoU(B, C) = 0. D = A's top three quarters: IoU(A, D) = 75/100 = 0.75,
# IoU(B, D) = 50/75. E / F elsewhere: IoU(E, F) = 8/16 = 0.5.
BOXES = np.array([[0, 0, 10, 10],      # A .9
                  [0, 0, 10, 5],       # B .8
                  [0, 5, 10, 10],      # C .7
                  [0, 0, 10, 7.5],     # D .6
                  [20, 20, 24, 24],    # E .5
                  [20, 20, 24, 22]],   # F .4
                 dtype=np.float32)
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=np.float32)


@pytest.mark.parametrize("thr,kept", [
    (0.5, [0, 1, 2, 4, 5]),      # B, C, F sit exactly at 0.5 and survive; D (0.75 with A) goes
    (0.75, [0, 1, 2, 3, 4, 5]),  # D exactly at 0.75 with A, 0.667 with B: survives
    (0.25, [0, 4]),              # B, C (0.5) and D (0.75) go; F (0.5 with E) goes
])
def test_nms_keeps_a_box_exactly_at_the_threshold(thr, kept):
    for dtype in (np.float32, np.float64):
        boxes, scores = BOXES.astype(dtype), SCORES.astype(dtype)
        expected = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
        assert expected == kept               # the hand count is torchvision's
        assert nms(boxes, scores, thr).tolist() == kept


def test_batched_nms_keeps_a_box_exactly_at_the_threshold():
    classes = np.array([0, 0, 1, 0, 2, 2])    # C alone in its class; E, F share class 2
    for thr in (0.5, 0.75):
        expected = batched_nms(torch.from_numpy(BOXES), torch.from_numpy(SCORES),
                               torch.from_numpy(classes), thr).tolist()
        assert nms(BOXES, SCORES, thr, classes=classes).tolist() == expected
    assert nms(BOXES, SCORES, 0.5, classes=classes).tolist() == [0, 1, 2, 4, 5]
