"""ssd/export_onnx.py: the exported SSD300 equals PyTorch under onnxruntime, raw maps and decoded,
at a batch other than the traced one (dynamic batch)."""
import numpy as np
import pytest
import torch

from ssd import SSD300, Encoder, dboxes300_coco
from ssd.export_onnx import main as export_main

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ssd5(tmp_path_factory):
    torch.manual_seed(0)
    net = SSD300(label_num=5).eval()
    path = tmp_path_factory.mktemp("ssd") / "iter_0.pt"
    torch.save({"model": net.state_dict(),
                "label_map": {0: "background", 1: "circle", 2: "rectangle", 3: "triangle", 4: "star"}}, path)
    return net, path


@pytest.mark.parametrize("decode", [False, True])
def test_export_matches_pytorch(ssd5, tmp_path, decode):
    net, ckpt = ssd5
    out = tmp_path / "ssd.onnx"
    export_main(["--checkpoint", str(ckpt), "--output-name", str(out)] + (["--decode"] if decode else []))
    images = torch.randn(2, 3, 300, 300)
    with torch.no_grad():
        expected = net(images)
        if decode:
            expected = Encoder(dboxes300_coco()).scale_back_batch(*expected)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == (["boxes", "scores"] if decode else ["locs", "confs"])
    got = session.run(None, {"image": images.numpy()})
    shapes = [(2, 8732, 4), (2, 8732, 5)] if decode else [(2, 4, 8732), (2, 5, 8732)]
    for g, e, shape in zip(got, expected, shapes):
        assert g.shape == shape
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-4 * float(e.abs().max()))


def test_export_of_a_non_ssd_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, bad)
    with pytest.raises(SystemExit) as info:
        export_main(["--checkpoint", str(bad), "--output-name", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and str(bad) in err[0]
