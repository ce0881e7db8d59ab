"""detkit-convert-data: COCO <-> YOLO <-> VOC through the one in-memory index; a round trip
COCO -> YOLO -> COCO keeps boxes (within 1e-6 of the image size), class names and the 12 COCO
stats of the same detections; the output appears whole or not at all."""
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from accel.errors import UserError
from detcore.data import convert as conv
from detcore.evaluation.coco_eval import score
from detcore.data.shapes import make_shapes
from detcore.data.layout import open_split
from yolox_tools import load_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    return make_shapes(root / "coco", 6, 4, seed=5, background=1)


def boxes_by_file(source):
    """file base name -> (class names, xyxy boxes, (h, w)) of every image of a source."""
    t = source.table
    out = {}
    for r in range(len(t)):
        b, c, _ = t.at(r)
        out[os.path.basename(t.file_name_at(r))] = ([source.class_names[k] for k in c.tolist()], b, t.hw[r])
    return out


def detections(source, rng):
    """Rows for every image: each object found with jitter and a random score, plus a stray box."""
    t = source.table
    owner = np.repeat(t.ids, t.counts)
    xywh = np.concatenate([t.boxes[:, :2], t.boxes[:, 2:] - t.boxes[:, :2]], axis=1)
    xywh = xywh + rng.normal(0, 2.0, xywh.shape)
    rows = np.column_stack([owner, xywh, rng.uniform(0.3, 1.0, len(owner)), np.asarray(source.class_ids)[t.cls]])
    stray = np.column_stack([t.ids, np.tile([5.0, 5.0, 40.0, 30.0], (len(t.ids), 1)),
                             rng.uniform(0.0, 0.6, len(t.ids)), np.full(len(t.ids), source.class_ids[0])])
    return np.concatenate([rows, stray])


def remap(rows, src, dst):
    """Detection rows of ``src``'s ids and categories -> ``dst``'s, matched by file and class name."""
    by_name = {os.path.basename(dst.file_name(i)): i for i in dst.ids}
    img = {i: by_name[os.path.basename(src.file_name(i))] for i in src.ids}
    cat = {c: dst.class_ids[dst.class_names.index(n)] for c, n in zip(src.class_ids, src.class_names)}
    out = rows.copy()
    out[:, 0] = [img[int(i)] for i in rows[:, 0]]
    out[:, 6] = [cat[int(c)] for c in rows[:, 6]]
    return out


def test_coco_yolo_coco_round_trip_keeps_boxes_names_and_stats(coco_set, tmp_path):
    yaml_path = conv.convert(coco_set, tmp_path / "yolo", "yolo")
    back = conv.convert(yaml_path, tmp_path / "back", "coco")
    for split in ("train", "val"):
        a, b = open_split(coco_set, split), open_split(back, split)
        assert a.class_names == b.class_names == open_split(yaml_path, split).class_names
        ba, bb = boxes_by_file(a), boxes_by_file(b)
        assert ba.keys() == bb.keys() and len(ba) == len(a.ids)
        for name, (cls_a, box_a, hw) in ba.items():
            cls_b, box_b, hw_b = bb[name]
            assert cls_a == cls_b and np.array_equal(hw, hw_b)
            assert (np.abs(box_a - box_b) <= 1e-6 * hw.max()).all(), name
    val_a, val_b = open_split(coco_set, "val"), open_split(back, "val")
    rows = detections(val_a, np.random.default_rng(0))
    stats_a = score(val_a.coco, rows, val_a.ids).stats
    stats_b = score(val_b.coco, remap(rows, val_a, val_b), val_b.ids).stats
    assert stats_a.shape == (12,) and 0 < stats_a[0] < 1
    np.testing.assert_allclose(stats_b, stats_a, atol=1e-12)
    written = json.loads((back / "annotations" / "instances_val2017.json").read_text())
    assert [c["name"] for c in written["categories"]] == list(val_a.class_names)


def test_voc_both_ways_and_links(coco_set, tmp_path):
    voc = conv.convert(coco_set, tmp_path / "voc", "voc", link="sym")
    jpg = next((voc / "VOCdevkit" / "VOC2007" / "JPEGImages").iterdir())
    assert jpg.is_symlink()
    coco = conv.convert(voc, tmp_path / "coco", "coco", link="hard")
    first = next((coco / "train2017").iterdir())
    src_file = coco_set / "train2017" / first.name
    assert os.stat(first).st_ino == os.stat(src_file).st_ino            # hard link to the original
    for split in ("train", "val"):
        a, b = boxes_by_file(open_split(coco_set, split)), boxes_by_file(open_split(coco, split))
        # one VOC devkit holds both splits: a val stem that train uses already is prefixed
        b = {n.removeprefix("val_"): v for n, v in b.items()}
        assert a.keys() == b.keys()
        for name in a:                                    # shapes' boxes are whole pixels: exact
            assert sorted(a[name][0]) == sorted(b[name][0])
            assert np.array_equal(np.sort(a[name][1], axis=0), np.sort(b[name][1], axis=0)), name


def test_cli_wrapper_console_script_and_whole_or_nothing(coco_set, tmp_path, capsys, monkeypatch):
    tool = load_tool("convert_data")
    tool.main([str(coco_set), "--out", str(tmp_path / "y"), "--format", "yolo", "--splits", "val"])
    assert "wrote yolo data to" in capsys.readouterr().out
    assert open_split(tmp_path / "y" / "data.yaml", "val").class_names[0] == "circle"
    with pytest.raises(UserError, match="exists and is not an empty folder"):
        conv.convert(coco_set, tmp_path / "y", "coco")
    with pytest.raises(UserError, match="has no test split"):
        conv.convert(coco_set, tmp_path / "t", "coco", splits=["test"])
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'"detkit-convert-data = detcore\.data\.convert:main"', setup)
    calls = []

    def failing(src, dst, link):
        calls.append(dst)
        if len(calls) == 3:
            raise UserError("disk full")
        Path(dst).write_bytes(b"x")

    monkeypatch.setattr(conv, "_place", failing)
    with pytest.raises(UserError, match="disk full"):
        conv.convert(coco_set, tmp_path / "half", "yolo")
    assert not (tmp_path / "half").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".half.partial")]


def test_make_shapes_writes_a_yolo_set(tmp_path, capsys):
    from detcore.data.shapes import main

    main(["--out", str(tmp_path / "s"), "--num-train", "2", "--num-val", "1", "--format", "yolo",
          "--background", "1"])
    assert "(+1 background each)" in capsys.readouterr().out
    src = open_split(tmp_path / "s" / "data.yaml", "val")
    assert len(src.ids) == 2 and int(src.table.counts[-1]) == 0
