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


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_all_classes_in_order_is_the_default_byte_for_byte(tmp_path):
    make_shapes = load_make_shapes()
    default = make_shapes(tmp_path / "a", 3, 2, seed=5)
    named = make_shapes(tmp_path / "b", 3, 2, seed=5, classes="circle,rectangle,triangle,star")
    assert _tree_bytes(default) == _tree_bytes(named)


def test_class_subset_keeps_the_chosen_shapes_in_the_given_order(tmp_path):
    make_shapes = load_make_shapes()
    full = _load(make_shapes(tmp_path / "full", 12, 0, seed=0), "train2017")
    sub = _load(make_shapes(tmp_path / "sub", 12, 0, seed=0, classes=["star", "circle"]), "train2017")
    assert sub["categories"] == [{"id": 1, "name": "star", "supercategory": "shape"},
                                 {"id": 2, "name": "circle", "supercategory": "shape"}]
    assert {a["category_id"] for a in sub["annotations"]} == {1, 2}
    assert sub["images"] == full["images"]
    # the other shapes are not drawn, every random draw still happens: each star/circle of the
    # full set is in the subset at the same place, its visible box only grows (fewer occluders)
    remap = {4: 1, 1: 2}
    for img in full["images"]:
        kept = [a for a in full["annotations"] if a["image_id"] == img["id"] and a["category_id"] in remap]
        mine = [a for a in sub["annotations"] if a["image_id"] == img["id"]]
        assert len(mine) >= len(kept)
        for a in kept:
            x, y, w, h = a["bbox"]
            assert any(b["category_id"] == remap[a["category_id"]] and b["bbox"][0] <= x and b["bbox"][1] <= y
                       and b["bbox"][0] + b["bbox"][2] >= x + w and b["bbox"][1] + b["bbox"][3] >= y + h
                       for b in mine), (img["id"], a["bbox"])


def test_voc_export_is_the_coco_set_in_voc_layout(tmp_path):
    import xml.etree.ElementTree as ET

    make_shapes = load_make_shapes()
    coco_root = make_shapes(tmp_path / "coco", 5, 3, seed=0)
    voc = make_shapes(tmp_path / "voc", 5, 3, seed=0, fmt="voc") / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    assert main.joinpath("trainval.txt").read_text().split() == ["000001", "000002", "000003", "000004", "000005"]
    assert main.joinpath("test.txt").read_text().split() == ["000006", "000007", "000008"]
    difficult = 0
    for split, offset in (("train2017", 0), ("val2017", 5)):
        data = _load(coco_root, split)
        for im in data["images"]:
            stem = f"{im['id'] + offset:06d}"
            jpg = (coco_root / split / im["file_name"]).read_bytes()
            assert (voc / "JPEGImages" / f"{stem}.jpg").read_bytes() == jpg
            root = ET.parse(voc / "Annotations" / f"{stem}.xml").getroot()
            assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (im["width"], im["height"])
            objs = root.findall("object")
            anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
            assert len(objs) == len(anns)
            for obj, ann in zip(objs, anns):
                x, y, w, h = (int(v) for v in ann["bbox"])
                # VOC: 1-based inclusive pixels; COCO: x is the first pixel, x + w - 1 the last
                box = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
                assert box == [x + 1, y + 1, x + w, y + h]
                assert obj.findtext("name") == ("circle", "rectangle", "triangle", "star")[ann["category_id"] - 1]
                assert obj.findtext("difficult") == str(int(max(w, h) < 24))
                difficult += int(obj.findtext("difficult"))
    assert difficult > 0


@pytest.mark.parametrize("flags, message", [
    (["--classes", "star,hexagon"],
     "error: --classes: unknown class 'hexagon' (choose from circle,rectangle,triangle,star)"),
    (["--classes", "star,star"], "error: --classes: star,star names a class twice"),
    (["--format", "yaml"], "error: argument --format: invalid choice: 'yaml' (choose from coco, voc, yolo)"),
])
def test_cli_rejects_bad_format_and_classes(tmp_path, capsys, flags, message):
    load_make_shapes()
    with pytest.raises(SystemExit) as exit_info:
        sys.modules["make_shapes"].main(["--out", str(tmp_path / "x"), "--num-train", "1", "--num-val", "0", *flags])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert err.replace("'coco', 'voc', 'yolo'", "coco, voc, yolo") == message
    assert not (tmp_path / "x").exists()          # nothing written for a bad flag
