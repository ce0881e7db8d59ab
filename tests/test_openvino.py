"""The torch-free runtime under OpenVINO (``detcore/deploy/backends.py``): an .onnx run with
``runtime="openvino"`` and the IR that ``--format openvino`` writes give onnxruntime's detections
(boxes within 1e-3 of the image size, scores within 1e-3) at batch 1 and 8, for the end-to-end
graph and for the plain one (whose post-processing is the same numpy code); a broken IR, the
wrong runtime for it and a missing OpenVINO are one line each."""
import sys

import cv2
import pytest

from accel.errors import UserError
from detcore.deploy import runtime as rt
from test_onnx_e2e import export_nano, nano, ssd, val_images  # noqa: F401  (fixtures)
from test_onnx_runtime import assert_same_detections
from yolox_tools import SHAPES_EXP, load_tool

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def same_as_onnxruntime(path_ov, path_onnx, images, **kwargs):
    reference = rt.Detector(path_onnx, runtime="onnxruntime", **kwargs)
    openvino = rt.Detector(path_ov, runtime="openvino", **kwargs)
    assert (reference.runtime, openvino.runtime) == ("onnxruntime", "openvino")
    assert (openvino.kind, openvino.output, openvino.names) == (reference.kind, reference.output, reference.names)
    want = reference.detect_batch(images)
    assert sum(len(w) for w in want) > 20
    for img, w, got8, k in zip(images, want, openvino.detect_batch(images), range(len(images))):
        assert_same_detections(w, got8, img.shape[1], img.shape[0])
        if k < 2:
            assert_same_detections(w, openvino(img), img.shape[1], img.shape[0])


def test_yolox_end_to_end_ir_and_onnx_under_openvino_equal_onnxruntime(nano, val_images):  # noqa: F811
    path = export_nano(nano, "nano_ov.onnx", "--dynamic", "--max-det", "1000", "--format", "openvino")
    xml = path.with_suffix(".xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    images = [cv2.imread(str(p)) for p in val_images[:8]]
    assert rt.Detector(xml).runtime == "openvino"                  # picked by the file
    same_as_onnxruntime(xml, path, images)
    same_as_onnxruntime(path, path, images[:3])                    # the .onnx itself under OpenVINO


def test_yolox_raw_map_under_openvino_equals_onnxruntime(nano, val_images):  # noqa: F811
    _, _, ckpt, folder = nano
    path = folder / "nano_raw_ov.onnx"
    load_tool("export_onnx").main(["-f", SHAPES_EXP, "-c", str(ckpt), "--output-name", str(path), "--dynamic",
                                   "test_size", "256,256"])
    same_as_onnxruntime(path, path, [cv2.imread(str(p)) for p in val_images[:8]], conf=0.3, nms=0.45)


def test_ssd_end_to_end_ir_equals_onnxruntime(ssd, val_images):  # noqa: F811
    from ssd.export_onnx import main as export_main

    ckpt, folder = ssd
    path = folder / "ssd_ov.onnx"
    export_main(["--checkpoint", str(ckpt), "--output-name", str(path.with_suffix(".xml")), "--nms",
                 "--format", "openvino"])
    same_as_onnxruntime(path.with_suffix(".xml"), path, [cv2.imread(str(p)) for p in val_images[:3]])


def test_bad_ir_wrong_runtime_and_missing_openvino_are_one_line(nano, tmp_path, monkeypatch):  # noqa: F811
    path = export_nano(nano, "nano_ov_bad.onnx", "--format", "openvino")
    xml = path.with_suffix(".xml")
    lonely = tmp_path / "lonely.xml"
    lonely.write_bytes(xml.read_bytes())                            # no .bin beside it
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>not an IR")
    broken.with_suffix(".bin").write_bytes(b"")
    cases = [({"path": lonely}, "weights"), ({"path": broken}, "OpenVINO cannot read it"),
             ({"path": xml, "runtime": "onnxruntime"}, "runs under --runtime openvino")]
    for kwargs, says in cases:
        with pytest.raises(UserError) as info:
            rt.Detector(**kwargs)
        assert "\n" not in str(info.value) and says in str(info.value), str(info.value)
    monkeypatch.setitem(sys.modules, "openvino", None)              # import openvino -> ImportError
    with pytest.raises(UserError, match=r"OpenVINO is not installed: pip install 'detkit\[openvino\]'"):
        rt.Detector(xml)
