"""COCO reading at scale (issue 28): a training split is a few numpy arrays, no Python object per
box, so forked loader workers share its pages instead of copying them; its labels equal the
pycocotools-based reading bit for bit; polygons are cut before parsing; the pycocotools index that
scoring needs is built on first use only, from the whole json, and scores as before.

The 2,000-image set comes from bench/coco_scale.py's generator (COCO's fields, polygons, crowd
RLEs, boxes past the image edge), the one the COCO-scale benchmark measures at 118k images."""
import gc
import importlib.util
import json
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from accel.errors import UserError
from detcore.evaluation import coco_eval
from detcore.data.coco import CocoSource, load_coco, read_json
from ssd.data import CocoDetection
from yolox.data import COCODataset

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("coco_scale", ROOT / "bench" / "coco_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scale_set(tmp_path_factory):
    """2,000 images (~14.5k boxes) in the generated COCO-scale layout; read-only."""
    root = tmp_path_factory.mktemp("coco_scale")
    _generator().generate(root, 2000, seed=3)
    return root


def pycocotools_labels(ann_file, img_size):
    """Per sorted image id: (labels [N, 5] as YOLOX letterboxes them, (h, w)), read the way the
    data sets read COCO before issue 28 (pycocotools index, one annotation at a time): crowd boxes
    ignored, each box clipped to its image, then dropped when it has no area left."""
    coco = COCO(str(ann_file))
    class_ids = sorted(coco.getCatIds())
    out = {}
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        h, w = info["height"], info["width"]
        rows = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
            if ann.get("iscrowd", 0):
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x1, y1 = min(max(x, 0.0), w), min(max(y, 0.0), h)
            x2, y2 = min(max(x + max(bw, 0.0), 0.0), w), min(max(y + max(bh, 0.0), 0.0), h)
            if x2 > x1 and y2 > y1:
                rows.append([x1, y1, x2, y2, class_ids.index(ann["category_id"])])
        boxes = np.array(rows, dtype=np.float64).reshape(-1, 5)
        r = min(img_size[0] / h, img_size[1] / w)
        boxes[:, :4] *= r
        out[img_id] = (boxes, (int(h), int(w)))
    return out


def reachable(root):
    """Every object reachable from ``root`` through references, leaving out modules, classes and
    functions (shared by the whole process, not held by the data set)."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
            types.CodeType)
    seen, todo = {id(root): root}, [root]
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if id(ref) not in seen and not isinstance(ref, skip):
                seen[id(ref)] = ref
                todo.append(ref)
    return list(seen.values())


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_shapes_labels_equal_the_pycocotools_reading(shapes_coco, split):
    ann_file = shapes_coco / "annotations" / f"instances_{split}.json"
    expected = pycocotools_labels(ann_file, (416, 352))
    ds = COCODataset(shapes_coco, json_file=ann_file.name, name=split, img_size=(416, 352))
    assert ds.ids == sorted(expected)
    for i, img_id in enumerate(ds.ids):
        np.testing.assert_array_equal(ds.load_anno(i), expected[img_id][0])
        _, labels, hw, got_id = ds.pull_item(i)
        np.testing.assert_array_equal(labels, expected[img_id][0])
        assert hw == expected[img_id][1] and got_id.tolist() == [img_id]


def test_scale_set_labels_equal_the_pycocotools_reading(scale_set):
    """Crowd boxes, boxes past the edge (clipped) and images without boxes, for both models."""
    ann_file = scale_set / "annotations" / "instances_train2017.json"
    expected = pycocotools_labels(ann_file, (640, 640))
    ds = COCODataset(scale_set, img_size=(640, 640))
    assert ds.ids == sorted(expected)
    for i, img_id in enumerate(ds.ids):
        np.testing.assert_array_equal(ds.load_anno(i), expected[img_id][0])
    for train in (False, True):
        ssd = CocoDetection(scale_set / "train2017", ann_file, train=train)
        assert ssd.ids == [i for i in sorted(expected) if len(expected[i][0]) or not train]
        for index in range(0, len(ssd), 97):
            img_id = ssd.ids[index]
            boxes, (h, w) = expected[img_id]
            r = min(640 / h, 640 / w)
            ltrb, labels = ssd.target(index)
            np.testing.assert_array_equal(ltrb, (boxes[:, :4] / r / [w, h, w, h]).astype(np.float32))
            np.testing.assert_array_equal(labels, boxes[:, 4].astype(np.int64) + 1)
            np.testing.assert_array_equal(ssd.targets[img_id][1], labels)


def test_training_data_sets_hold_no_object_per_box(scale_set):
    """What a forked loader worker would copy page by page if it touched them: after the build,
    neither data set reaches a pycocotools index, an annotation dict or anything else that grows
    with the number of boxes; their pickles are about the size of their arrays."""
    ann_file = scale_set / "annotations" / "instances_train2017.json"
    n_boxes = len(json.loads(ann_file.read_text())["annotations"])
    for ds in (COCODataset(scale_set, img_size=(640, 640)),
               CocoDetection(scale_set / "train2017", ann_file, train=True)):
        objects = reachable(ds)
        assert not any(isinstance(o, COCO) for o in objects)
        assert not any(isinstance(o, dict) and "bbox" in o for o in objects)
        # the id lists (source's and SSD's own: an int per image each) and a few hundred fixed
        # objects; a dict per box alone would be ~14.5k
        assert len(objects) < 2 * len(ds.source.ids) + 500 < n_boxes / 2
        table = ds.source.table
        arrays = sum(a.nbytes for a in (table.ids, table.hw, table.first, table.boxes, table.cls,
                                        table.crowd, table.name_at)) + len(table.names)
        assert len(pickle.dumps(ds)) < 1.2 * arrays + 16 * len(ds.source.ids)
        assert "coco" not in vars(ds.source)                 # no index built for training


def test_table_is_read_only(scale_set):
    """Views of the shared arrays are handed out; editing one would edit every later sample."""
    source = CocoSource(scale_set / "annotations" / "instances_train2017.json", scale_set / "train2017")
    boxes, _ = source.boxes[source.ids[0]]
    with pytest.raises(ValueError, match="read-only"):
        boxes[..., 0] = 1.0


def test_index_built_on_first_use_from_the_whole_json_and_scores_as_before(scale_set, monkeypatch):
    ann_file = scale_set / "annotations" / "instances_train2017.json"
    source = CocoSource(ann_file, scale_set / "train2017")
    assert "coco" not in vars(source)
    index = source.coco
    assert source.coco is index and "coco" in vars(source)              # built once, then kept
    whole = load_coco(ann_file)
    assert index.dataset == whole.dataset                                # polygons included
    assert any(a["segmentation"] and isinstance(a["segmentation"], list) for a in index.anns.values())
    rows = _generator().detections(ann_file, per_image=20, seed=1)
    expected = coco_eval.score(whole, rows, source.ids).stats
    assert 0.05 < expected[0] < 0.95
    np.testing.assert_array_equal(coco_eval.gather_and_score(lambda: source.coco, rows, source.ids).stats,
                                  expected)
    # on any other rank the index is never asked for
    monkeypatch.setattr(coco_eval, "is_main_process", lambda: False)
    fresh = CocoSource(ann_file, scale_set / "train2017")
    coco_eval.gather_and_score(lambda: fresh.coco, rows, fresh.ids)
    assert "coco" not in vars(fresh)


def write(path, data, **dump):
    path.write_text(json.dumps(data, **dump))
    return path


def test_polygons_cut_before_parsing_and_nothing_else(tmp_path):
    """Polygon values become [] (pretty-printed or not); an RLE, and a string that merely spells
    a segmentation key, are kept as they are."""
    data = {"images": [{"id": 1, "file_name": 'odd "segmentation": [[1, 2]] name.jpg', "height": 9, "width": 9}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 0,
                             "segmentation": [[1.5, 2, 3e1, 4.25E-1], [5, 6, 7, 8]], "area": 4.0},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 1,
                             "segmentation": {"counts": [1, 2, 3], "size": [9, 9]}, "area": 4.0},
                            {"id": 3, "segmentation": [], "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
            "categories": [{"id": 1, "name": "a"}]}
    expected = json.loads(json.dumps(data))
    expected["annotations"][0]["segmentation"] = []
    for dump in ({}, {"indent": 2}, {"separators": (",", ":")}):
        path = write(tmp_path / "a.json", data, **dump)
        assert read_json(path, polygons=False) == expected
        assert read_json(path) == data


def test_syntax_error_names_the_files_line_although_polygons_are_cut(tmp_path):
    data = {"annotations": [{"segmentation": [[float(k), 2.0] for k in range(30)], "id": 1}], "images": []}
    text = json.dumps(data, indent=1).replace('"images": []', '"images": [1,, 2]')
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as raw_error:
        json.loads(text)
    with pytest.raises(UserError, match=rf"bad.json is not valid JSON \(.* at line {raw_error.value.lineno}\)"):
        read_json(path, polygons=False)


def test_duplicate_and_non_integer_image_ids(tmp_path):
    """An id listed twice is its last listing (as pycocotools' index); a non-integer id is one line."""
    (tmp_path / "imgs").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    images = [{"id": 4, "file_name": "a.jpg", "height": 10, "width": 10},
              {"id": 4, "file_name": "b.jpg", "height": 20, "width": 30}]
    anns = [{"id": 1, "image_id": 4, "category_id": 1, "bbox": [0, 0, 25, 15]}]
    ann = write(tmp_path / "x.json", {"images": images, "annotations": anns, "categories": [{"id": 1}]})
    source = CocoSource(ann, tmp_path / "imgs")
    assert source.ids == [4] and source.size(4) == (20, 30) and source.file_name(4) == "b.jpg"
    np.testing.assert_array_equal(source.boxes[4][0], [[0, 0, 25, 15]])
    images[1]["id"] = "4b"
    write(ann, {"images": images, "annotations": anns, "categories": [{"id": 1}]})
    with pytest.raises(UserError, match=r"x.json: images\[1\] has id '4b'; image ids must be integers") as info:
        CocoSource(ann, tmp_path / "imgs")
    assert "\n" not in str(info.value)


def test_ssd_samples_follow_assigned_ids(shapes_coco):
    """SSD samples are rows of the table chosen by ``ids``: assigning a subset serves exactly
    those images (test_ssd_learns picks two so); an id the split lacks is one line."""
    ds = CocoDetection(shapes_coco / "val2017", shapes_coco / "annotations" / "instances_val2017.json")
    chosen = ds.ids[::-1][:3]
    ds.ids = chosen
    assert len(ds) == 3 and [ds[i][3] for i in range(3)] == chosen
    np.testing.assert_array_equal(ds.target(1)[1], ds.targets[chosen[1]][1])
    with pytest.raises(UserError, match=r"image id 999999 is not in .*instances_val2017.json"):
        ds.ids = [chosen[0], 999999]
