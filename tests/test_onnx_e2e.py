"""End-to-end exports (``--nms`` on tools/export_onnx.py and ssd/export_onnx.py): decoding and ONNX
NonMaxSuppression in the graph give, under onnxruntime, the PyTorch postprocess's detections
(same count, boxes within 1e-3 of the image size, scores within 1e-3) at batch 1 and batch 8,
per class and class-agnostic; --max-det caps at the best; a fixed-batch file runs any number of
images; thresholds the graph cannot honour are one line."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from accel.errors import UserError
from detcore.deploy import runtime as rt
from test_onnx_runtime import assert_same_detections
from yolox_tools import SHAPES_EXP, detecting_nano, detecting_ssd_checkpoint, load_tool

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SIZE = 256
CPU = torch.device("cpu")
CONF, IOU = 0.3, 0.45


@pytest.fixture(scope="module")
def val_images(shapes_coco):
    return sorted((shapes_coco / "val2017").glob("*.jpg"))


@pytest.fixture(scope="module")
def nano(val_images, tmp_path_factory):
    """(exp, decoding model, checkpoint, folder) of the shapes YOLOX-nano that detects untrained."""
    from detcore.training.checkpoints import save_atomic

    exp, model = detecting_nano(val_images, SIZE)
    folder = tmp_path_factory.mktemp("e2e")
    save_atomic({"model": model.state_dict()}, folder / "nano.pth")
    model.head.decode_in_inference = True
    exp.test_conf, exp.nmsthre = CONF, IOU
    return exp, model, folder / "nano.pth", folder


def export_nano(nano, name, *flags):
    _, _, ckpt, folder = nano
    path = folder / name
    load_tool("export_onnx").main(["-f", SHAPES_EXP, "-c", str(ckpt), "--output-name", str(path), "--nms",
                                   "--conf", str(CONF), "--iou", str(IOU), *flags,
                                   "test_size", f"{SIZE},{SIZE}"])
    return path


def torch_rows(exp, model, images, agnostic=False):
    """The PyTorch postprocess's rows per image (tools/demo.py's Predictor maths, batched)."""
    from yolox.data import ValTransform
    from yolox.utils import postprocess

    batch = torch.stack([torch.from_numpy(ValTransform()(img, None, exp.test_size)[0]) for img in images])
    with torch.no_grad():
        dets = postprocess(model(batch), exp.num_classes, CONF, IOU, class_agnostic=agnostic)
    out = []
    for img, det in zip(images, dets):
        ratio = min(SIZE / img.shape[0], SIZE / img.shape[1])
        out.append(torch.cat([det[:, :4] / ratio, (det[:, 4] * det[:, 5])[:, None], det[:, 6:7]], 1).numpy())
    return out


@pytest.mark.parametrize("agnostic", [False, True])
def test_yolox_end_to_end_equals_pytorch_at_batch_1_and_8(nano, val_images, agnostic):
    exp, model, _, _ = nano
    path = export_nano(nano, f"nano_e2e_{agnostic}.onnx", "--dynamic", "--max-det", "1000",
                       *(["--agnostic-nms"] if agnostic else []))
    detector = rt.Detector(path)
    assert (detector.kind, detector.output, detector.batch) == ("yolox", "nms", None)
    assert detector.names == list(exp.class_names)
    images = [cv2.imread(str(p)) for p in val_images[:8]]
    expected = torch_rows(exp, model, images, agnostic)
    assert sum(len(e) for e in expected) > 50                   # a real comparison, tens of boxes an image
    one_by_one = [detector(img) for img in images]
    batched = detector.detect_batch(images)
    for img, want, got1, got8 in zip(images, expected, one_by_one, batched):
        assert_same_detections(want, got1, img.shape[1], img.shape[0])
        assert_same_detections(want, got8, img.shape[1], img.shape[0])


def test_max_det_keeps_the_best_and_a_fixed_batch_runs_any_count(nano, val_images):
    exp, model, _, _ = nano
    path = export_nano(nano, "nano_e2e_fixed3.onnx", "--max-det", "5", "--batch-size", "3")
    detector = rt.Detector(path)
    assert detector.batch == 3
    images = [cv2.imread(str(p)) for p in val_images[:7]]        # 3 + 3 + 1 (zero-padded)
    expected = torch_rows(exp, model, images)
    assert max(len(e) for e in expected) > 5                    # the cap has something to cut
    for img, want, got in zip(images, expected, detector.detect_batch(images)):
        assert len(got) == min(5, len(want))
        if len(want):
            best = want[np.argsort(-want[:, 4], kind="stable")[:5]]
            assert_same_detections(best, got, img.shape[1], img.shape[0])


def test_thresholds_the_graph_cannot_honour_are_one_line(nano, val_images):
    path = export_nano(nano, "nano_e2e_guard.onnx")
    img = cv2.imread(str(val_images[0]))
    full = rt.Detector(path)(img)
    higher = rt.Detector(path, conf=0.5)(img)                  # a higher conf filters the output
    assert len(higher) == (full[:, 4] >= 0.5).sum() and len(higher) < len(full)
    for kwargs, says in (({"conf": 0.1}, "below the score threshold 0.3"), ({"nms": 0.6}, "IoU threshold 0.45"),
                         ({"agnostic": True}, "its NMS is per class")):
        with pytest.raises(UserError) as info:
            rt.Detector(path, **kwargs)
        assert "\n" not in str(info.value) and says in str(info.value) and str(path) in str(info.value)


@pytest.fixture(scope="module")
def ssd(val_images, tmp_path_factory):
    """(checkpoint, folder) of a seeded 5-label SSD300 whose batch-norm statistics come from the
    val images (as tests/test_onnx_runtime.py: it then detects without training)."""
    folder = tmp_path_factory.mktemp("ssd_e2e")
    return detecting_ssd_checkpoint(val_images[:4], folder), folder


@pytest.mark.parametrize("agnostic", [False, True])
def test_ssd_end_to_end_equals_pytorch_at_batch_1_and_8(ssd, val_images, agnostic):
    from ssd.demo import Predictor, load_detector
    from ssd.export_onnx import main as export_main

    ckpt, folder = ssd
    path = folder / f"ssd_e2e_{agnostic}.onnx"
    export_main(["--checkpoint", str(ckpt), "--output-name", str(path), "--nms", "--conf", "0.3", "--iou", "0.5"]
                + (["--agnostic-nms"] if agnostic else []))
    net, names = load_detector(ckpt, CPU)
    predictor = Predictor(net, CPU, 0.3, 0.5, agnostic=agnostic)
    detector = rt.Detector(path)
    assert (detector.kind, detector.output, detector.names) == ("ssd", "nms", names)
    pils, sizes = [], []
    for p in val_images[:8]:
        with Image.open(p) as img:
            pils.append(img.convert("RGB"))
            sizes.append(img.size)
    expected = predictor.predict_batch(pils)
    assert sum(len(e) for e in expected) > 20
    bgrs = [cv2.imread(str(p)) for p in val_images[:8]]
    batched = detector.detect_batch(bgrs)
    for k, ((w, h), want, got8) in enumerate(zip(sizes, expected, batched)):
        assert_same_detections(want, got8, w, h)
        if k < 2:                                      # batch 1 on two of them (SSD300 is slow on CPU)
            assert_same_detections(want, detector(bgrs[k]), w, h)
