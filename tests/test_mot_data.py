"""The MOTChallenge layout as a data format (detcore.data.mot): the generated sequences read back
as generated (boxes and track ids per frame), ignore rows become crowd boxes, splits (folders or
halves), bad input as one line, COCO -> MOT -> index and MOT -> MOT keep the boxes, layout detection."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from accel.errors import UserError
from detcore.data import convert as conv
from detcore.data import shapes
from detcore.data.layout import class_names_of, detect_layout, open_sources, open_split
from detcore.data.mot import FRAME_STRIDE, MotSource
from detcore.data.shapes import make_shapes
from detcore.data.shapes_video import video_sequence
from detcore.data.writers import mot_sequence, write_seqinfo

FRAMES = 12


@pytest.fixture(scope="module")
def mot_set(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("mot") / "shapes", 0, 0, seed=3, video=2, frames=FRAMES)


def per_image(source):
    """image id -> (sorted track ids of the boxes, number of ignore regions)."""
    t, out = source.table, {}
    for r, img_id in enumerate(t.ids.tolist()):
        s = slice(t.first[r], t.first[r + 1])
        out[img_id] = (sorted(source.track_ids[s].tolist()), int((source.ignore.img == img_id).sum()))
    return out


def test_generated_sequences_read_back_as_generated(mot_set):
    assert detect_layout(mot_set).kind == "mot"
    for split, split_idx in (("train", 0), ("val", 1)):
        source = MotSource(mot_set, split)
        assert source.part == "all" and source.class_names == shapes.CATEGORIES
        assert [s.name for s in source.sequences] == ["shapes-01", "shapes-02"]
        got = per_image(source)
        expected, boxes = {}, {}
        for i in range(2):
            w, h, frames = video_sequence(3, split_idx, i, FRAMES)
            assert source.sequences[i][5:7] == (w, h)
            for frame, img, rows in frames:
                img_id = (i + 1) * FRAME_STRIDE + frame
                expected[img_id] = (sorted(r[0] for r in rows if r[4]), sum(1 for r in rows if not r[4]))
                boxes[img_id] = sorted(tuple(r[2]) for r in rows if r[4])
                assert source.size(img_id) == img.shape[:2]
        assert got == expected
        assert sum(n for _, n in got.values()) > 0, "the generator writes some ignore rows"
        for img_id, want in boxes.items():
            b = source.boxes[img_id][0]
            xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
            assert sorted(map(tuple, xywh.tolist())) == want
        crowd = [a for a in source.coco.anns.values() if a["iscrowd"]]
        assert len(crowd) == len(source.ignore.img) and len(source.coco.imgs) == 2 * FRAMES


def test_generator_is_deterministic_and_tracks_move(mot_set, tmp_path):
    again = make_shapes(tmp_path / "again", 0, 0, seed=3, video=2, frames=FRAMES)
    for seq in ("train/shapes-01", "val/shapes-02"):
        assert (again / seq / "gt/gt.txt").read_bytes() == (mot_set / seq / "gt/gt.txt").read_bytes()
        assert (again / seq / "img1/000007.jpg").read_bytes() == (mot_set / seq / "img1/000007.jpg").read_bytes()
    rows = np.loadtxt(mot_set / "train/shapes-01/gt/gt.txt", delimiter=",")
    track = rows[rows[:, 1] == 1]
    assert len(np.unique(track[:, 2])) > 1          # track 1 moves
    # tracks 1 and 2 meet: at some frame their boxes overlap
    a, b = rows[rows[:, 1] == 1], rows[rows[:, 1] == 2]
    common = np.intersect1d(a[:, 0], b[:, 0])
    assert common.size
    shapes.main(["--out", str(tmp_path / "cli"), "--video", "1", "--frames", "3"])
    assert sorted(os.listdir(tmp_path / "cli" / "train" / "shapes-01" / "img1")) == [f"00000{i}.jpg" for i in (1, 2, 3)]
    with pytest.raises(UserError, match="--video"):
        make_shapes(tmp_path / "bad", 0, 0, video=1, fmt="yolo")


def test_without_val_folder_train_and_val_are_halves(mot_set, tmp_path):
    root = tmp_path / "mot17like"
    shutil.copytree(mot_set / "train", root / "train")
    train, val = open_sources(root)
    assert (train.part, val.part) == ("first", "second")
    assert {i % FRAME_STRIDE for i in train.ids} == set(range(1, FRAMES // 2 + 1))
    assert {i % FRAME_STRIDE for i in val.ids} == set(range(FRAMES // 2 + 1, FRAMES + 1))
    full = MotSource(mot_set, "train")
    assert len(train.table.boxes) + len(val.table.boxes) == len(full.table.boxes)
    # a folder of sequences: the same halves, and no test split
    seqs = open_split(root / "train", "val")
    assert seqs.part == "second" and seqs.ids == val.ids
    with pytest.raises(UserError, match="no test split"):
        open_split(root / "train", "test")
    with pytest.raises(UserError, match="no test/ folder"):
        open_split(root, "test")
    # 1-frame sequences (a converted image set with train/ only): train holds them, val nothing
    single = tmp_path / "single"
    write_sequence(single, "one", ["1,1,2,2,10,10,1,1,1"], frames=1)
    assert MotSource(single, "train").ids == [FRAME_STRIDE + 1]
    with pytest.raises(UserError, match="val split holds no frames"):
        MotSource(single, "val")


def write_sequence(root, name, gt_lines, frames=4, size=(40, 30), classes=None, split="train"):
    """A small hand-made sequence: plain grey frames of ``size`` (w, h), the gt lines as given."""
    import cv2

    folder = mot_sequence(root, split, name)
    for f in range(1, frames + 1):
        cv2.imwrite(str(folder / "img1" / f"{f:06d}.jpg"), np.full((size[1], size[0], 3), 90, np.uint8))
    write_seqinfo(folder, frames, size[0], size[1], 25, ".jpg", classes)
    (folder / "gt" / "gt.txt").write_text("".join(f"{ln}\n" for ln in gt_lines))
    return folder


MOT17_ROWS = ["1,1,2,2,10,10,1,1,0.9",      # pedestrian: a box
              "1,2,15,2,10,10,0,1,1",       # pedestrian, consider 0: ignore
              "2,3,2,2,8,8,0,7,1",          # static person (distractor): ignore
              "2,4,20,5,8,8,0,3,1",         # car: left out
              "3,5,5,5,10,12,1,1,0.1",      # pedestrian 10 % visible: a box, ignore with min_visibility
              "4,6,30,20,20,20,1,1,1"]      # pedestrian crossing the border: clipped


def test_ignore_rows_become_crowd_boxes(tmp_path):
    write_sequence(tmp_path, "MOT17-02-FRCNN", MOT17_ROWS)
    write_sequence(tmp_path, "MOT17-02-SDP", MOT17_ROWS)          # MOT17's copy: read once
    write_sequence(tmp_path, "MOT17-04-FRCNN", [], split="val")     # a val/ folder: train is every frame
    source = MotSource(tmp_path, "train")
    assert source.class_names == ("pedestrian",) and source.class_ids == [1]
    assert [s.name for s in source.sequences] == ["MOT17-02-FRCNN"]
    assert source.track_ids.tolist() == [1, 5, 6]
    assert source.ignore.track_ids.tolist() == [2, 3]
    assert source.table.cleaning["crowd_ignored"] == 2 and not source.table.crowd.any()
    assert source.boxes[FRAME_STRIDE + 4][0].tolist() == [[30.0, 20.0, 40.0, 30.0]]    # clipped
    crowd = sorted((a["image_id"], a["bbox"]) for a in source.coco.anns.values() if a["iscrowd"])
    assert crowd == [(FRAME_STRIDE + 1, [15.0, 2.0, 10.0, 10.0]), (FRAME_STRIDE + 2, [2.0, 2.0, 8.0, 8.0])]
    assert {a["category_id"] for a in source.coco.anns.values()} == {1}
    strict = MotSource(tmp_path, "train", min_visibility=0.25)
    assert strict.track_ids.tolist() == [1, 6] and strict.ignore.track_ids.tolist() == [2, 3, 5]
    # a detection on an ignore region is no false positive: COCOeval scores the boxes alone
    from detcore.evaluation.coco_eval import score
    t = source.table
    rows = [[int(i), *b[:2], *(b[2:] - b[:2]), 0.9, 1] for i, b in zip(np.repeat(t.ids, t.counts), t.boxes)]
    rows += [[int(i), *b[:2], *(b[2:] - b[:2]), 0.95, 1] for i, b in zip(source.ignore.img, source.ignore.boxes)]
    stats = score(source.coco, np.asarray(rows, np.float64)).stats
    assert stats[1] == pytest.approx(1.0)               # AP50: every box found, nothing else counted
    with pytest.raises(UserError, match="names the classes"):
        MotSource(tmp_path, "train", class_names=("person",))


@pytest.mark.parametrize("case, match", [
    ("bad_line", r"gt/gt.txt line 2: not numbers"),
    ("short_line", r"gt/gt.txt line 1: 4 comma-separated values"),
    ("missing_frame", r"gt/gt.txt line 2: frame 9 has no image .*000009.jpg"),
    ("seq_length", r"seqinfo.ini: seqLength 5 but .*img1 holds 4 .jpg images"),
    ("im_size", r"seqinfo.ini: imWidth x imHeight 41x30 but the first frame .*000001.jpg is 40x30"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, case, match):
    lines = ["1,1,2,2,10,10,1,1,1", "2,1,3,3,10,10,1,1,1"]
    if case == "bad_line":
        lines[1] = "2,1,3,x,10,10,1,1,1"
    if case == "short_line":
        lines[0] = "1,1,2,2"
    if case == "missing_frame":
        lines[1] = "9,1,3,3,10,10,1,1,1"
    folder = write_sequence(tmp_path, "seq", lines)
    ini = folder / "seqinfo.ini"
    if case == "seq_length":
        ini.write_text(ini.read_text().replace("seqLength=4", "seqLength=5"))
    if case == "im_size":
        ini.write_text(ini.read_text().replace("imWidth=40", "imWidth=41"))
    with pytest.raises(UserError, match=match) as err:
        MotSource(tmp_path, "train")
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def boxes_by_size(source):
    """Sorted (h, w, class names, boxes) of every image: images matched by content, not by id."""
    t, out = source.table, []
    for r in range(len(t)):
        b, c, _ = t.at(r)
        order = np.lexsort(b.T[::-1])
        out.append((tuple(t.hw[r].tolist()), tuple(source.class_names[k] for k in c[order].tolist()),
                    np.round(b[order], 6).tolist()))
    return sorted(out, key=repr)


def test_coco_to_mot_and_back_keeps_boxes(tmp_path):
    coco = make_shapes(tmp_path / "coco", 5, 3, seed=2, background=1)
    mot = conv.convert(coco, tmp_path / "mot", "mot")
    assert detect_layout(mot).kind == "mot" and conv.available_splits(mot) == ["train", "val"]
    assert class_names_of(mot) == shapes.CATEGORIES
    for split in ("train", "val"):
        src, back = open_split(coco, split), open_split(mot, split)
        assert back.part == "all" and back.class_names == src.class_names
        assert len(back.ids) == len(src.ids) and len(back.table.boxes) == len(src.table.boxes)
        assert boxes_by_size(back) == boxes_by_size(src)
    again = conv.convert(mot, tmp_path / "coco2", "coco")
    assert boxes_by_size(open_split(again, "val")) == boxes_by_size(open_split(coco, "val"))


def test_mot_to_mot_keeps_sequences_and_tracks(mot_set, tmp_path):
    out = conv.main([str(mot_set), "--out", str(tmp_path / "copy"), "--format", "mot", "--link", "sym"])
    assert out is None
    for split in ("train", "val"):
        a, b = MotSource(mot_set, split), MotSource(tmp_path / "copy", split)
        assert a.ids == b.ids and [s.name for s in b.sequences] == [s.name for s in a.sequences]
        assert np.array_equal(a.table.boxes, b.table.boxes) and np.array_equal(a.track_ids, b.track_ids)
        assert np.array_equal(a.ignore.boxes, b.ignore.boxes)
        assert np.allclose(a.visibility, b.visibility)


def test_layout_detection(mot_set, tmp_path):
    assert detect_layout(mot_set).kind == "mot"
    assert detect_layout(mot_set / "train").kind == "mot"            # a folder of sequences
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="MOT"):
        detect_layout(tmp_path / "empty")
    folder = Path(mot_set) / "train" / "shapes-01"
    assert detect_layout(folder.parent).path == folder.parent
    train, val = open_sources(mot_set)
    assert train.class_names == val.class_names == shapes.CATEGORIES
    _, val_only = open_sources(mot_set, train=False, class_names=shapes.CATEGORIES)
    assert val_only.ids == val.ids
