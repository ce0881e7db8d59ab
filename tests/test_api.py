"""yolox.api.Detector: the Python API example of docs/api.md runs as written, and the API computes what
the CLI computes (same evaluation numbers as tools/eval.py, same boxes as tools/demo.py), with
keyword mistakes reported as TypeErrors and bad values as one-line UserErrors."""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from accel.errors import UserError
from yolox_tools import ROOT, load_tool, run_cli

MARKER = "<!-- tests/test_api.py runs the next python block verbatim -->"


def readme_example():
    """The ```python block right after MARKER in docs/api.md, unchanged."""
    text = (ROOT / "docs" / "api.md").read_text()
    assert MARKER in text, "docs/api.md lost the Python API example marker"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block, "no ```python block after the marker"
    return block.group(1)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """Run the docs/api.md example in an empty folder with the checkout importable (as an installed
    copy would be); returns (folder, its output)."""
    cwd = tmp_path_factory.mktemp("api_example")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", readme_example()], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc.stdout


def test_readme_example_trains_evaluates_predicts_exports(example):
    cwd, out = example
    run = cwd / "yolox_output" / "yolox_nano_shapes"
    assert f"checkpoint: {os.path.join('yolox_output', 'yolox_nano_shapes', 'best_ckpt.pth')}" in out
    latest = torch.load(run / "latest_ckpt.pth", weights_only=False)
    assert latest["iteration"] == 4 and latest["start_epoch"] == 1     # steps=4 reached the exp
    assert re.search(r"^AP50_95 \d\.\d{4} AP50 \d\.\d{4}$", out, re.M)
    assert re.search(r"^\d+ boxes; first: ", out, re.M)
    onnx_file = cwd / "yolox_output" / "yolox_nano_shapes.onnx"
    assert f"onnx: {os.path.join('yolox_output', 'yolox_nano_shapes.onnx')}" in out
    assert onnx_file.stat().st_size > 100_000


@pytest.fixture
def detector(example):
    from yolox.api import Detector

    cwd, _ = example
    return Detector("yolox-nano-shapes", ckpt=cwd / "yolox_output" / "yolox_nano_shapes" / "best_ckpt.pth",
                    data_dir=cwd / "datasets" / "shapes_api", output_dir=str(cwd / "yolox_output"),
                    input_size=(160, 160), test_size=(160, 160), data_num_workers=0)


def test_evaluate_equals_the_eval_cli(example, detector, capsys):
    cwd, _ = example
    result = detector.evaluate(batch_size=4, device="cpu", conf=0.001)
    code, out, _, _ = run_cli(load_tool("eval").main, [
        "-n", "yolox-nano-shapes", "-c", str(detector.ckpt), "-b", "4", "--device", "cpu", "--conf", "0.001",
        "--data_dir", str(cwd / "datasets" / "shapes_api"), "input_size", "160,160", "test_size", "160,160",
        "data_num_workers", "0", "output_dir", str(cwd / "yolox_output")], capsys)
    assert code == 0
    assert f"AP50_95: {result.ap50_95:.4f}\nAP50: {result.ap50:.4f}" in out
    assert "Average Precision" in result.summary
    assert detector.exp.test_conf == 0.01        # the call's --conf did not stick to the exp


def test_predict_equals_the_demo_cli(example, detector, capsys):
    cwd, _ = example
    image = cwd / "datasets" / "shapes_api" / "val2017" / "000000000002.jpg"
    found = detector.predict(image, conf=0.02, nms=0.45, device="cpu")
    code, out, _, _ = run_cli(load_tool("demo").main, [
        "image", "-n", "yolox-nano-shapes", "-c", str(detector.ckpt), "--path", str(image), "--conf", "0.02",
        "--nms", "0.45", "--device", "cpu", "test_size", "160,160"], capsys)
    assert code == 0
    printed = [ln.strip() for ln in out.splitlines() if ln.startswith("  ")]
    assert len(found.boxes) > 0 and len(printed) == len(found.boxes)
    ours = [f"{name} {score:.3f} [{b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f}]"
            for name, score, b in zip(found.labels, found.scores, found.boxes)]
    assert ours == printed
    assert found.boxes.dtype == np.float32 and found.classes.dtype == np.int64
    # an array in gives the same as its file; a list gives one result per image
    again = detector.predict([cv2.imread(str(image))], conf=0.02, nms=0.45, device="cpu")
    assert len(again) == 1 and np.array_equal(again[0].boxes, found.boxes)


def test_keyword_mistakes_are_type_errors_and_bad_values_user_errors(detector, tmp_path):
    from yolox.api import Detector

    with pytest.raises(TypeError, match="bogus"):
        Detector("yolox-nano", bogus=1)
    with pytest.raises(TypeError, match="max_epochs"):
        detector.train(max_epochs=1)
    with pytest.raises(TypeError, match="name"):
        detector.evaluate(name="yolox-s")
    with pytest.raises(TypeError, match="tsise"):
        detector.evaluate(tsise=160)
    with pytest.raises(UserError, match="multiples of 32"):
        detector.set(input_size=(100, 100))
    with pytest.raises(UserError, match="unknown model name"):
        Detector("yolox-nope")
    with pytest.raises(UserError, match="not a readable image"):
        detector.predict(tmp_path / "missing.jpg", device="cpu")
    with pytest.raises(UserError, match="uint8"):
        detector.predict(np.zeros((8, 8), np.float32), device="cpu")
    with pytest.raises(UserError, match="batch_size must be >= 1"):
        detector.export_onnx(str(tmp_path / "m.onnx"), batch_size=0)
    with pytest.raises(UserError, match="--batch-size must be >= 1"):
        detector.train(batch_size=0, device="cpu")
