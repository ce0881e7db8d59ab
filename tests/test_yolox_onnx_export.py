"""tools/export_onnx.py: the exported graph reproduces the PyTorch model under onnxruntime."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from yolox.exp import get_exp

ROOT = Path(__file__).resolve().parents[1]


def _export_main():
    spec = importlib.util.spec_from_file_location("export_onnx", ROOT / "tools" / "export_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def ort():
    try:
        import onnxruntime
    except ImportError as exc:  # optional dependency
        pytest.skip(f"onnxruntime not importable: {exc}")
    return onnxruntime


@pytest.mark.parametrize("decode", [True, False])
def test_export_matches_pytorch(ort, tmp_path, decode):
    from accel.checkpoint import save_atomic
    torch.manual_seed(0)
    exp = get_exp(exp_name="yolox-nano")
    model = exp.get_model().eval()
    with torch.no_grad():  # move the heads off their init so the outputs are informative
        for conv in model.head.obj_preds:
            conv.bias.normal_()
    ckpt = tmp_path / "nano.pth"
    save_atomic({"model": model.state_dict()}, ckpt)
    onnx_path = tmp_path / "nano.onnx"
    argv = ["-n", "yolox-nano", "-c", str(ckpt), "--output-name", str(onnx_path), "--batch-size", "2"]
    _export_main()(argv + ([] if decode else ["--no-decode"]) + ["test_size", "(96,128)"])

    images = torch.rand(2, 3, 96, 128)
    model.head.decode_in_inference = decode
    with torch.no_grad():
        expected = model(images).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})
    assert got.shape == expected.shape == (2, 12 * 16 + 6 * 8 + 3 * 4, 85)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_export_rejects_bad_batch_size(capsys):
    with pytest.raises(SystemExit) as info:
        _export_main()(["-n", "yolox-nano", "--batch-size", "0"])
    assert info.value.code == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
