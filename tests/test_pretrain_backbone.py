"""tools/pretrain_backbone.py: the crop-classification start for SSD writes a file SSD loads."""
import importlib.util
from pathlib import Path

import pytest
import torch

from ssd import SSD300

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("pretrain_backbone", ROOT / "tools" / "pretrain_backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_the_ssd_backbone_keys_and_ssd_loads_them(shapes_coco, tmp_path, capsys):
    out = tmp_path / "bb.pth"
    _tool().main(["--data", str(shapes_coco), "--out", str(out), "--minutes", "0.02", "--batch-size", "8"])
    state = torch.load(out, weights_only=True)
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"conv1", "bn1", "layer1", "layer2", "layer3"}    # no layer4 / fc: SSD drops them
    assert state["layer3.0.conv1.weight"].shape == (256, 128, 3, 3)
    model = SSD300(label_num=5, backbone_path=str(out))
    assert torch.equal(model.model.layer2[0][0].conv1.weight, state["layer3.0.conv1.weight"])
    assert "val crop accuracy" in capsys.readouterr().out


def test_crops_are_labelled_shapes_and_background(shapes_coco):
    import random

    from detcore.data.coco import CocoSource

    root = Path(shapes_coco)
    src = CocoSource(root / "annotations" / "instances_train2017.json", root / "train2017")
    x, y = _tool().crops_of(src, 32, 2, random.Random(0))
    boxes = sum(len(src.boxes[i][0]) for i in src.ids)
    assert x.shape[1:] == (32, 32, 3) and x.dtype == torch.uint8
    assert int((y < len(src.class_ids)).sum()) == 2 * boxes          # 2 contexts per box
    assert int((y == len(src.class_ids)).sum()) > 0                  # background crops too


@pytest.mark.parametrize("argv, needle", [(["--minutes", "0"], "--minutes must be > 0"),
                                          (["--size", "16"], "--size >= 32")])
def test_bad_flags_exit_2(shapes_coco, tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        _tool().main(["--data", str(shapes_coco), "--out", str(tmp_path / "x.pth"), *argv])
    assert exc.value.code == 2 and needle in capsys.readouterr().err
