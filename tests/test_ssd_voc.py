"""SSD on Pascal VOC data: ``ssd/train.py -d`` finds a VOC devkit (or one VOC<year> folder),
trains on 2007+2012 trainval, evaluates on VOC2007 test with the label count and names taken from
the train split, prints the VOC devkit table next to the COCO summary, and refuses a val split
with a class the train split lacks in one line."""
import re
import shutil

import pytest
import torch

from ssd import train as ssd_train
from ssd.data import open_sources, voc_layout
from yolox_tools import run_cli



def make_voc(root, num_train, num_val):
    from conftest import load_make_shapes

    return load_make_shapes()(root, num_train=num_train, num_val=num_val, seed=0, fmt="voc")


@pytest.fixture(scope="module")
def voc_shapes(tmp_path_factory):
    """6 trainval images (4 with boxes; circles, rectangles and stars: 4 labels), 2 test images
    (circles and stars) in DIR/VOCdevkit/VOC2007."""
    return make_voc(tmp_path_factory.mktemp("ssd_voc"), num_train=6, num_val=2)


def run_main(argv, capsys):
    return run_cli(ssd_train.main, argv, capsys)


def test_voc_layouts_are_found(voc_shapes, tmp_path):
    devkit = voc_shapes / "VOCdevkit"
    assert voc_layout(voc_shapes) == (devkit, ("2007",))
    assert voc_layout(devkit) == (devkit, ("2007",))
    assert voc_layout(devkit / "VOC2007") == (devkit, ("2007",))
    assert voc_layout(tmp_path) is None
    # a 2012 trainval next to it: trained on together with 2007's, still tested on VOC2007 test
    both = tmp_path / "VOCdevkit"
    shutil.copytree(devkit / "VOC2007", both / "VOC2007")
    shutil.copytree(devkit / "VOC2007", both / "VOC2012")
    (both / "VOC2012" / "ImageSets" / "Main" / "test.txt").unlink()
    train, val = open_sources(both)
    single, _ = open_sources(devkit)
    assert train.image_sets == [("2007", "trainval"), ("2012", "trainval")]
    assert len(train.ids) == 2 * len(single.ids) and val.image_sets == [("2007", "test")]
    assert train.class_names == val.class_names == ("circle", "rectangle", "star")


def test_ssd_trains_and_evaluates_on_a_voc_devkit(voc_shapes, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err, log = run_main(
        ["-d", str(voc_shapes), "-b", "2", "-e", "1", "--val-interval", "1", "--log-interval", "1",
         "--num-workers", "0", "--pretrained-backbone", "none", "--trainable-backbone-layers", "0",
         "-s", "0", "--output-dir", str(out)], capsys)
    assert code == 0 and not [ln for ln in err if ln.startswith("error")], log[-2000:]
    # 6 train images: the 2 whose xml lists no object are kept as background (negatives)
    assert "6 train / 2 val images, 3 classes" in log and "finished at iteration 3" in log
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in log
    assert "VOC devkit AP:" in log and "VOC07 metric? Yes" in log and "AP for circle = " in log
    ckpt = out / "models" / "iter_3.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["label_map"] == {0: "background", 1: "circle", 2: "rectangle", 3: "star"}
    assert state["model"]["conf.0.weight"].shape[0] == 4 * 4          # 4 labels x 4 anchors
    # evaluated alone from its VOC2007 folder: labels as the checkpoint names them
    code, stdout, err, log = run_main(["--eval-only", "--checkpoint", str(ckpt), "-d",
                                       str(voc_shapes / "VOCdevkit" / "VOC2007"), "-b", "2", "--num-workers", "0",
                                       "--output-dir", str(tmp_path / "eval")], capsys)
    assert code == 0 and re.search(r"^AP50_95: \S+\nAP50: \S+$", stdout, re.M), log[-2000:]
    assert "VOC devkit AP:" in log and "AP for star = " in log


def test_val_class_unknown_to_the_train_split_is_one_line(tmp_path, capsys):
    root = make_voc(tmp_path / "small", num_train=4, num_val=2)       # train: rectangles, stars only
    code, _, err, _ = run_main(["-d", str(root / "VOCdevkit"), "-b", "2", "--num-workers", "0", "--no-save",
                                "--pretrained-backbone", "none", "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1, err
    assert "class 'circle' is not one of class_names ['rectangle', 'star']" in err[0]
    assert "the classes of the training split, VOC2007 trainval" in err[0]
