"""tools/quantize.py (``detcore/deploy/quantize.py``): static INT8 of an exported detector with
onnxruntime (QDQ) and with NNCF (OpenVINO IR) from N calibration images; the int8 model runs in
the torch-free runtime with most of the fp32 model's boxes; the head's decoding stays float; an
empty calibration folder, an end-to-end export and a wrong output name are one line each."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from accel.errors import UserError
from detcore.deploy import runtime as rt
from detcore.deploy.postprocess import yolox_decode
from detcore.deploy.quantize import depthwise_convs, tail_nodes
from test_onnx_e2e import export_nano, nano, val_images  # noqa: F401  (fixtures)
from yolox_tools import ROOT, SHAPES_EXP, load_tool

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def follows_fp32(fp32_path, int8, images):
    """The int8 network's map follows the fp32 one on val images: objectness correlates (>= 0.25)
    and the decoded box centres are within 3 px for the median anchor. A weak bar on purpose:
    this untrained network's deep activations are tiny (its batch-norm statistics are set from 4
    images), so 8 bits cost it far more than a trained model (measured: correlation 0.37 with
    onnxruntime); boxes after NMS are too fragile a measure here (scores within hundredths of
    each other). Accuracy of trained models is bench/formats.py's AP column."""
    fp32 = rt.Detector(fp32_path)
    images = [cv2.imread(str(p)) for p in images[:6]]
    x = np.concatenate([fp32.preprocess(img)[0] for img in images])
    ref, got = fp32.infer(x)[0], int8.infer(x)[0]
    corr = np.corrcoef(ref[..., 4].ravel(), got[..., 4].ravel())[0, 1]
    ref_d, got_d = (yolox_decode(m, fp32.grids, fp32.strides) for m in (ref, got))
    centre = np.median(np.abs(ref_d[..., :2] - got_d[..., :2]))
    print(f"objectness correlation {corr:.3f}, median centre difference {centre:.2f} px")
    return corr >= 0.25 and centre <= 3.0


@pytest.fixture(scope="module")
def raw_export(nano):  # noqa: F811
    _, _, ckpt, folder = nano
    path = folder / "nano_q.onnx"
    load_tool("export_onnx").main(["-f", SHAPES_EXP, "-c", str(ckpt), "--output-name", str(path),
                                   "test_size", "256,256"])
    return path


def test_onnxruntime_int8_keeps_the_boxes_and_a_float_head(raw_export, shapes_coco, val_images, tmp_path):  # noqa: F811
    out = tmp_path / "nano_int8.onnx"
    load_tool("quantize").main([str(raw_export), "--calib-data", str(shapes_coco / "train2017"),
                                "--num-images", "24", "--backend", "onnxruntime", "--output", str(out)])
    graph = onnx.load(str(out)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    # the head after the last convolutions stays float: no Q/DQ between them and the output
    producer = {o: n for n in graph.node for o in n.output}
    stack, seen = [producer[graph.output[0].name]], set()
    while stack:
        node = stack.pop()
        if node.name in seen or node.op_type == "Conv":
            continue
        seen.add(node.name)
        assert node.op_type not in ("QuantizeLinear", "DequantizeLinear"), node.name
        stack.extend(producer[i] for i in node.input if i in producer)
    assert len(seen) > 5
    int8 = rt.Detector(out, conf=0.3, nms=0.45)
    assert (int8.kind, int8.names) == (rt.Detector(raw_export).kind, rt.Detector(raw_export).names)
    assert follows_fp32(raw_export, int8, val_images)
    assert out.stat().st_size < 0.8 * raw_export.stat().st_size       # int8 weights


def test_openvino_nncf_int8_runs_with_the_boxes(raw_export, shapes_coco, val_images, tmp_path):  # noqa: F811
    pytest.importorskip("nncf")
    out = tmp_path / "nano_int8.xml"
    load_tool("quantize").main([str(raw_export), "--calib-data", str(shapes_coco / "train2017"),
                                "--num-images", "24", "--backend", "openvino", "--output", str(out)])
    int8 = rt.Detector(out, conf=0.3, nms=0.45)
    assert int8.runtime == "openvino" and int8.names == rt.Detector(raw_export).names
    assert follows_fp32(raw_export, int8, val_images)


def test_tail_nodes_are_those_after_the_last_convolutions():
    nodes = [("c1", "Conv", ["x"], ["a"]), ("act", "Sigmoid", ["a"], ["b"]), ("c2", "Conv", ["b"], ["c"]),
             ("side", "Relu", ["a"], ["s"]), ("cat", "Concat", ["c", "s"], ["d"]), ("dec", "Exp", ["d"], ["y"])]
    assert sorted(tail_nodes(nodes)) == ["cat", "dec", "side"]


def test_bad_inputs_are_one_line(nano, raw_export, val_images, tmp_path):  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    e2e = export_nano(nano, "nano_q_e2e.onnx")
    cases = [([str(raw_export), "--calib-data", str(empty)], f"--calib-data {empty} contains no images"),
             ([str(raw_export), "--calib-data", str(tmp_path / "gone")], "does not exist"),
             ([str(e2e), "--calib-data", str(val_images[0].parent)], "an end-to-end (--nms) export"),
             ([str(raw_export), "--calib-data", str(val_images[0].parent), "--backend", "onnxruntime",
               "--output", str(tmp_path / "x.xml")], "writes an .onnx"),
             ([str(raw_export), "--calib-data", str(val_images[0].parent), "--output", str(tmp_path / "x.onnx")],
              "--backend openvino writes an OpenVINO IR")]
    for argv, says in cases:
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "quantize.py"), *argv], capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], \
            (argv, proc.stderr)
    with pytest.raises(UserError, match="nothing to calibrate on"):
        from detcore.deploy.quantize import calibration_files
        calibration_files(str(empty / "*.jpg"), 10)


def test_depthwise_convolutions_are_counted(tmp_path):
    """What the onnxruntime back end's warning rests on: group = channels convolutions only."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.Conv2d(4, 8, 1),
                              torch.nn.Conv2d(8, 8, 3, groups=2)).eval()
    path = tmp_path / "dw.onnx"
    torch.onnx.export(net, torch.zeros(1, 4, 8, 8), str(path), dynamo=False)
    assert depthwise_convs(path) == 1
