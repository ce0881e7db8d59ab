"""tools/export_onnx.py and tools/export_torchscript.py: the exported model reproduces the
PyTorch model (raw map by default as upstream, decoded with --decode_in_inference)."""
import numpy as np
import pytest
import torch

from yolox.exp import get_exp
from yolox_tools import load_tool


def _export_main(tool="export_onnx"):
    return load_tool(tool).main


@pytest.fixture(scope="module")
def nano_ckpt(tmp_path_factory):
    """(eval model, checkpoint path) of a yolox-nano whose objectness biases moved off their init."""
    from detcore.training.checkpoints import save_atomic
    torch.manual_seed(0)
    model = get_exp(exp_name="yolox-nano").get_model().eval()
    with torch.no_grad():  # move the heads off their init so the outputs are informative
        for conv in model.head.obj_preds:
            conv.bias.normal_()
    ckpt = tmp_path_factory.mktemp("nano") / "nano.pth"
    save_atomic({"model": model.state_dict()}, ckpt)
    return model, ckpt


@pytest.fixture(scope="module")
def ort():
    try:
        import onnxruntime
    except ImportError as exc:  # optional dependency
        pytest.skip(f"onnxruntime not importable: {exc}")
    return onnxruntime


@pytest.mark.parametrize("decode", [True, False])
def test_export_matches_pytorch(ort, nano_ckpt, tmp_path, decode):
    model, ckpt = nano_ckpt
    onnx_path = tmp_path / "nano.onnx"
    argv = ["-n", "yolox-nano", "-c", str(ckpt), "--output-name", str(onnx_path), "--batch-size", "2"]
    _export_main()(argv + (["--decode_in_inference"] if decode else []) + ["test_size", "(96,128)"])

    images = torch.rand(2, 3, 96, 128)
    model.head.decode_in_inference = decode
    with torch.no_grad():
        expected = model(images).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})
    assert got.shape == expected.shape == (2, 12 * 16 + 6 * 8 + 3 * 4, 85)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # raw (upstream's default) and decoded maps differ in the box columns
    model.head.decode_in_inference = not decode
    with torch.no_grad():
        assert not np.allclose(model(images).numpy()[..., :4], got[..., :4], atol=1e-2)


@pytest.mark.parametrize("decode", [True, False])
def test_torchscript_export_matches_pytorch(nano_ckpt, tmp_path, decode):
    model, ckpt = nano_ckpt
    path = tmp_path / "nano.torchscript.pt"
    argv = ["-n", "yolox-nano", "-c", str(ckpt), "--output-name", str(path)]
    _export_main("export_torchscript")(argv + (["--decode_in_inference"] if decode else [])
                                       + ["test_size", "(96,128)"])
    images = torch.rand(3, 3, 96, 128)
    model.head.decode_in_inference = decode
    with torch.no_grad():
        expected = model(images)
        got = torch.jit.load(str(path))(images)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tool", ["export_onnx", "export_torchscript"])
def test_export_without_weights_or_with_the_wrong_ones_is_one_line(nano_ckpt, tmp_path, capsys, tool):
    out = ["--output-name", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as info:
        _export_main(tool)(["-n", "yolox-nano", *out])
    assert info.value.code == 2
    assert "pass -c CKPT (or --random-weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _export_main(tool)(["-n", "yolox-s", "-c", str(nano_ckpt[1]), *out])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "belongs to another model" in err[0]
    _export_main(tool)(["-n", "yolox-nano", "--random-weights", *out, "test_size", "64,64"])
    assert (tmp_path / "x").stat().st_size > 0


def test_export_rejects_bad_batch_size(capsys):
    with pytest.raises(SystemExit) as info:
        _export_main()(["-n", "yolox-nano", "--batch-size", "0"])
    assert info.value.code == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
