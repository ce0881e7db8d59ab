"""The synthetic COCO generator: valid COCO, deterministic, varied, fast, and a working CLI."""
import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from conftest import ROOT, load_make_shapes


def _load(root, split):
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_layout_and_pycocotools_loads(shapes_coco):
    for split, num in (("train2017", 24), ("val2017", 12)):
        coco = COCO(str(shapes_coco / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == num
        assert sorted(coco.getCatIds()) == [1, 2, 3, 4]
        assert [c["name"] for c in coco.loadCats([1, 2, 3, 4])] == ["circle", "rectangle", "triangle", "star"]
        assert len(list((shapes_coco / split).glob("*.jpg"))) == num
        for info in coco.loadImgs(coco.getImgIds()):
            img = cv2.imread(str(shapes_coco / split / info["file_name"]))
            assert img.shape == (info["height"], info["width"], 3)


def test_annotations_are_valid_coco_boxes(shapes_coco):
    data = _load(shapes_coco, "train2017")
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    ids = [a["id"] for a in data["annotations"]]
    assert len(ids) == len(set(ids)) and len(ids) > 24        # ~3 objects per image on average
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        iw, ih = sizes[ann["image_id"]]
        assert w >= 4 and h >= 4
        assert 0 <= x and 0 <= y and x + w <= iw and y + h <= ih
        assert 0 < ann["area"] <= w * h                       # visible pixel count fits in its box
        assert ann["iscrowd"] == 0 and ann["category_id"] in (1, 2, 3, 4)


def test_varied_sizes_counts_and_classes(shapes_coco):
    data = _load(shapes_coco, "train2017")
    dims = np.array([(im["width"], im["height"]) for im in data["images"]])
    assert dims.min() >= 256 and dims.max() <= 480
    assert (dims[:, 0] != dims[:, 1]).any() and len(np.unique(dims[:, 0])) > 5
    counts = np.bincount([a["image_id"] for a in data["annotations"]], minlength=25)[1:]
    assert counts.max() <= 6 and len(np.unique(counts)) >= 3
    assert {a["category_id"] for a in data["annotations"]} == {1, 2, 3, 4}
    extents = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    assert extents.min() < 40 and extents.max() > 100           # small to large objects


def test_deterministic_from_seed(tmp_path):
    make_shapes = load_make_shapes()
    a, b, c = (make_shapes(tmp_path / n, 4, 2, seed=s) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    for split in ("train2017", "val2017"):
        ann = f"annotations/instances_{split}.json"
        assert (a / ann).read_bytes() == (b / ann).read_bytes()
        for f in sorted((a / split).glob("*.jpg")):
            assert f.read_bytes() == (b / split / f.name).read_bytes()
    assert _load(a, "train2017")["images"] != _load(c, "train2017")["images"]


def test_speed_50_images(tmp_path):
    start = time.perf_counter()
    load_make_shapes()(tmp_path, 40, 10, seed=1)
    assert time.perf_counter() - start < 10.0


def test_cli_writes_set_and_rejects_bad_flags(tmp_path, capsys):
    cmd = [sys.executable, str(ROOT / "tools" / "make_shapes.py"), "--out", str(tmp_path / "d"),
           "--num-train", "2", "--num-val", "1", "--seed", "3"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(_load(tmp_path / "d", "val2017")["images"]) == 1
    load_make_shapes()
    with pytest.raises(SystemExit) as exit_info:
        sys.modules["make_shapes"].main(["--out", str(tmp_path / "e"), "--seed", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --seed must be >= 0, got -1"
