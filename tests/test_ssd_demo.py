"""ssd/demo.py: an SSD checkpoint on images -> boxes drawn with the checkpoint's class names;
bad input (missing path, no images, a checkpoint that is not SSD's) -> one line, exit 2."""
import re

import cv2
import numpy as np
import pytest
import torch

from ssd import SSD300
from ssd import demo as ssd_demo
from yolox_tools import run_cli

NAMES = {0: "background", 1: "circle", 2: "rectangle", 3: "triangle", 4: "star"}


@pytest.fixture(scope="module")
def val_images(tmp_path_factory):
    from conftest import load_make_shapes

    root = load_make_shapes()(tmp_path_factory.mktemp("ssd_demo"), num_train=0, num_val=2, seed=0)
    return root / "val2017"


def biased_checkpoint(path, winner, label_map=True):
    """An SSD300(5) whose every anchor predicts label ``winner`` (0 = background: nothing) with
    its default box: zero head weights, a large confidence bias, zero box offsets."""
    torch.manual_seed(0)
    net = SSD300(label_num=5)
    with torch.no_grad():
        for conf, loc in zip(net.conf, net.loc):
            conf.weight.zero_()
            loc.weight.zero_()
            loc.bias.zero_()
            bias = conf.bias.view(5, -1)          # channels are (label, anchor): SSD300.forward
            bias.fill_(0.0)
            bias[winner] = 12.0
    state = {"model": net.state_dict()}
    if label_map:
        state["label_map"] = NAMES
    else:
        state.update(iteration=3, epoch=1)        # an old resume file: no class names
    torch.save(state, path)
    return path


def run_demo(argv, capsys):
    """(exit code, stdout, stderr lines that are not log lines) of ``ssd/demo.py argv``."""
    return run_cli(ssd_demo.main, argv, capsys)[:3]


def strong_changes(a, b):
    """Share of pixels changed by more than JPEG re-encoding does (any channel off by > 48)."""
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 48).mean())


def test_demo_draws_named_boxes_on_every_image(val_images, tmp_path, capsys):
    ckpt = biased_checkpoint(tmp_path / "iter_5.pt", winner=2)
    out = tmp_path / "drawn"
    code, stdout, err = run_demo(["--checkpoint", str(ckpt), "--path", str(val_images), "--conf", "0.3",
                                  "--save_result", "--output-dir", str(out), "--device", "cpu"], capsys)
    assert code == 0 and err == [], err
    inputs = sorted(val_images.glob("*.jpg"))
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in inputs] and len(inputs) == 2
    for src in inputs:
        before, after = cv2.imread(str(src)), cv2.imread(str(out / src.name))
        assert before.shape == after.shape
        assert strong_changes(before, after) > 0.01, src       # boxes and labels drawn
        assert re.search(rf"{re.escape(str(src))}: ([1-9]\d*) detections", stdout)
    # without --save_result the boxes are printed, named from the checkpoint's label_map
    code, stdout, _ = run_demo(["-c", str(ckpt), "--path", str(inputs[0]), "--device", "cpu"], capsys)
    assert code == 0 and re.search(r"^  rectangle 1\.000 \[\d+, \d+, \d+, \d+\]$", stdout, re.M), stdout


def test_demo_draws_nothing_when_nothing_is_detected(val_images, tmp_path, capsys):
    """The control for the test above: a background-only model leaves the image as it was (up to
    JPEG re-encoding), so the changes measured there are the drawn boxes."""
    ckpt = biased_checkpoint(tmp_path / "iter_5.pt", winner=0)
    src = sorted(val_images.glob("*.jpg"))[0]
    code, stdout, _ = run_demo(["-c", str(ckpt), "--path", str(src), "--output-dir", str(tmp_path / "o"),
                                "--device", "cpu"], capsys)
    assert code == 0 and f"{src}: 0 detections" in stdout
    assert strong_changes(cv2.imread(str(src)), cv2.imread(str(tmp_path / "o" / src.name))) < 0.001


def test_demo_names_labels_by_number_without_label_map(val_images, tmp_path, capsys):
    ckpt = biased_checkpoint(tmp_path / "ssd300_latest.pth", winner=3, label_map=False)
    src = sorted(val_images.glob("*.jpg"))[0]
    code, stdout, _ = run_demo(["-c", str(ckpt), "--path", str(src), "--device", "cpu"], capsys)
    assert code == 0 and re.search(r"^  3 1\.000 \[", stdout, re.M), stdout


def test_demo_bad_input_is_one_line(val_images, tmp_path, capsys):
    ckpt = biased_checkpoint(tmp_path / "iter_5.pt", winner=1)
    (tmp_path / "empty").mkdir()
    torch.save({"model": {"backbone.stem.conv.weight": torch.zeros(2, 3, 3, 3)}}, tmp_path / "yolox.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    cases = [
        (["-c", str(ckpt), "--path", str(tmp_path / "nope")], f"--path {tmp_path / 'nope'} does not exist"),
        (["-c", str(ckpt), "--path", str(tmp_path / "empty")], f"--path {tmp_path / 'empty'} contains no images"),
        (["-c", str(tmp_path / "yolox.pth"), "--path", str(val_images)],
         f"--checkpoint {tmp_path / 'yolox.pth'}: not an SSD300 checkpoint"),
        (["-c", str(tmp_path / "list.pth"), "--path", str(val_images)],
         f"--checkpoint {tmp_path / 'list.pth'}: not an SSD checkpoint"),
        (["-c", str(ckpt), "--path", str(val_images), "--conf", "1.5"], "--conf must be in [0, 1)"),
    ]
    for argv, needle in cases:
        code, _, err = run_demo([*argv, "--device", "cpu"], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (argv, err)
