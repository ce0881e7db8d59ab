"""detkit-check-data (detcore.data.check): every defect planted once in a small generated set is
counted once, from the same reading the trainers do; --strict exits 1 with one line, a clean set
passes; --plot writes the labels PNG; a VOC devkit is checked the same way. Also the
truncated-JPEG warning of training reads (named once per run, across forked workers) and the
trainers' start-up ``summary_line``."""
import json
import multiprocessing
import re

import numpy as np
import pytest

from conftest import load_make_shapes
from detcore.data import check as cd
from detcore.data import coco as detcoco
from detcore.data import images as detimages

NAMES = ("circle", "rectangle", "triangle", "star")


def _cut(path):
    """Truncate a JPEG to half its bytes (its end-of-image marker goes with the tail)."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A 10 train / 6 val shapes set with each defect planted once in train (two out-of-image
    boxes: one partly, one wholly outside) and no star left in val; returns (root, what)."""
    root = load_make_shapes()(tmp_path_factory.mktemp("planted"), 10, 6, seed=0)
    ann_file = root / "annotations" / "instances_train2017.json"
    data = json.loads(ann_file.read_text())
    has_boxes = {x["image_id"] for x in data["annotations"]}
    a = next(im for im in data["images"] if im["id"] in has_boxes)     # carries the planted boxes
    missing, unreadable, truncated, background, resized = [im for im in data["images"] if im is not a][:5]
    anns = [x for x in data["annotations"] if x["image_id"] != background["id"]]   # background image
    first = next(x for x in anns if x["image_id"] == a["id"])
    next_id = max(x["id"] for x in data["annotations"]) + 1
    w = a["width"]
    planted_boxes = {"partly_outside": [w - 10, 5, 30, 20], "wholly_outside": [w + 5, 5, 10, 10],
                     "zero_area": [10, 10, 0, 15], "negative_width": [50, 50, -5, 10],
                     "tiny": [20, 20, 1.5, 10], "duplicate": list(first["bbox"])}
    for k, bbox in enumerate(planted_boxes.values()):
        cat = first["category_id"] if bbox == first["bbox"] else 1
        anns.append({"id": next_id + k, "image_id": a["id"], "category_id": cat, "bbox": bbox,
                     "area": 1.0, "iscrowd": 0})
    anns.append({"id": next_id + 10, "image_id": 9999, "category_id": 1, "bbox": [1, 1, 5, 5],
                 "area": 25.0, "iscrowd": 0})                                     # an orphan
    resized["width"] += 10                                                        # listed size is wrong
    data["annotations"] = anns
    ann_file.write_text(json.dumps(data))
    folder = root / "train2017"
    (folder / missing["file_name"]).unlink()
    (folder / unreadable["file_name"]).write_bytes(b"not an image at all" * 4)
    _cut(folder / truncated["file_name"])
    # val: every star (category 4) removed
    val_file = root / "annotations" / "instances_val2017.json"
    val = json.loads(val_file.read_text())
    val["annotations"] = [x for x in val["annotations"] if x["category_id"] != 4]
    val_file.write_text(json.dumps(val))
    return root, {"data": data, "val": val, "missing": missing, "unreadable": unreadable,
                  "truncated": truncated, "background": background, "a": a}


@pytest.fixture(scope="module")
def checked(planted):
    root, _ = planted
    return cd.check_data(root)


def test_every_planted_defect_is_counted_once(planted, checked):
    _, what = planted
    (train, val), empty = checked
    assert (train.name, val.name) == ("train2017", "val2017")
    assert train.defects == {"missing": 1, "unreadable": 1, "truncated": 1, "size_mismatch": 1,
                             "outside": 2, "degenerate": 2, "duplicates": 1, "tiny": 1, "orphans": 1,
                             "repeated_ids": 0, "no_xml": 0}
    assert train.wholly_outside == 1
    assert train.examples["missing"] == what["missing"]["file_name"]
    assert train.examples["unreadable"] == what["unreadable"]["file_name"]
    assert train.examples["truncated"] == what["truncated"]["file_name"]
    for key in ("outside", "degenerate", "duplicates", "tiny"):
        assert train.examples[key] == what["a"]["file_name"]
    assert val.problems == 0
    assert empty == {"train2017": [], "val2017": ["star"]}
    assert cd.problem_count([train, val], empty) == 11 + 1


def test_images_instances_and_sizes_are_those_the_annotations_list(planted, checked):
    _, what = planted
    (train, val), _ = checked
    data = what["data"]
    listed = {im["id"] for im in data["images"]}
    present = listed - {what["missing"]["id"]}
    read = [x for x in data["annotations"] if x["image_id"] in present]     # orphan and missing left out
    labelled = {x["image_id"] for x in read}
    assert (train.listed, train.in_index) == (10, 9)
    assert (train.labelled, train.background) == (len(labelled), len(present - labelled))
    assert what["background"]["id"] not in labelled and train.background >= 1
    expected = np.bincount([x["category_id"] - 1 for x in read], minlength=4)
    np.testing.assert_array_equal(train.instances, expected)                   # planted boxes included
    hw = np.array([(im["height"], im["width"]) for im in data["images"] if im["id"] in present])
    assert train.sizes == (tuple(hw.min(0)), tuple(int(v) for v in np.median(hw, 0)), tuple(hw.max(0)))
    assert val.instances[3] == 0 and val.instances[:3].sum() == len(what["val"]["annotations"])


def test_the_audit_agrees_with_what_training_drops(planted):
    """The same reading, cleaned: the planted degenerate and wholly-outside boxes are the ones the
    cleaning drops (3), the partly-outside one the one it clips; the summary line says so."""
    root, _ = planted
    train, _ = (s for _, s in cd.open_splits(root))
    assert train.table.cleaning["dropped"] == 3 and train.table.cleaning["clipped"] == 1
    assert train.table.cleaning["images_skipped"] == 1
    line = cd.summary_line(train)
    assert line.startswith("train2017: 9 images (")
    for part in ("1 image skipped", "1 box clipped", "3 boxes dropped", "1 tiny box", "1 duplicate box"):
        assert part in line, line
    # a source opened outside auditing() holds no raw copy, and its summary is the same
    plain = detcoco.CocoSource(root / "annotations" / "instances_train2017.json", root / "train2017")
    assert plain.table.audit is None and cd.summary_line(plain) == line


def test_cli_prints_the_report_and_strict_exits_1_with_one_line(planted, capsys):
    root, what = planted
    cd.main(["-d", str(root)])                           # without --strict: report only, exit 0
    out = capsys.readouterr().out
    assert re.search(r"missing image files\s+1  e\.g\. " + re.escape(what["missing"]["file_name"]), out)
    assert re.search(r"boxes out of the image\s+2  \(1 wholly outside", out)
    assert "classes with no instance in val2017: star" in out and out.rstrip().endswith("12 problems found")
    with pytest.raises(SystemExit) as stop:
        cd.main(["-d", str(root), "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and err == [f"error: 12 problems in {root} (--strict)"]


def test_clean_set_passes_strict_and_plot_writes_a_png(shapes_coco, tmp_path, capsys):
    png = tmp_path / "plots" / "labels.png"
    cd.main(["-d", str(shapes_coco), "--strict", "--plot", str(png)])     # no SystemExit: exit 0
    out = capsys.readouterr().out
    assert "no problems found" in out and f"labels plot: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_labels_are_the_cleaned_boxes_normalised(planted):
    root, _ = planted
    train, _ = (s for _, s in cd.open_splits(root))
    counts, boxes = cd.labels_of(train)
    assert counts.sum() == len(boxes) == len(train.table.cls)
    assert (boxes >= 0).all() and (boxes <= 1).all()
    row = train.table.row(train.ids[0])
    (x1, y1, x2, y2), (h, w) = train.table.at(row)[0][0], train.table.hw[row]
    np.testing.assert_allclose(boxes[0], [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cd.main(["-d", str(tmp_path / "nowhere")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --data: {tmp_path / 'nowhere'} does not exist")
    with pytest.raises(SystemExit) as stop:
        cd.main(["-d", str(tmp_path), "--classes", "a,,b"])
    assert stop.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_voc_devkit(tmp_path):
    devkit = load_make_shapes()(tmp_path, 8, 4, seed=0, fmt="voc") / "VOCdevkit"
    voc = devkit / "VOC2007"
    stems = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    stems.sort(key=lambda s: "<xmax>" not in (voc / "Annotations" / f"{s}.xml").read_text())   # boxes first
    xml = voc / "Annotations" / f"{stems[0]}.xml"
    width = int(re.search(r"<width>(\d+)</width>", xml.read_text()).group(1))
    xml.write_text(re.sub(r"<xmax>\d+</xmax>", f"<xmax>{width + 7}</xmax>", xml.read_text(), count=1))
    (voc / "JPEGImages" / f"{stems[1]}.jpg").unlink()
    (voc / "Annotations" / f"{stems[2]}.xml").unlink()
    difficult = sum(len(re.findall(r"<difficult>1</difficult>", (voc / "Annotations" / f"{s}.xml").read_text()))
                    for s in stems if s not in stems[1:3])
    (train, val), empty = cd.check_data(devkit, class_names=NAMES)
    assert (train.name, val.name, train.kind) == ("VOC2007 trainval", "VOC2007 test", "VOC")
    assert {k: v for k, v in train.defects.items() if v} == {"outside": 1, "missing": 1, "no_xml": 1}
    assert train.examples["no_xml"].endswith(f"{stems[2]}.xml") and train.crowd == difficult
    # the generator's 8 train images hold no triangle: fixed class names expose it
    assert empty["VOC2007 trainval"] == ["triangle"] and train.listed == 7 and train.in_index == 6
    text = cd.format_report([train, val], empty)
    assert "listed images without annotation xml" in text and f"(+{difficult} difficult, kept)" in text


def test_jpeg_truncation_reads_the_end_marker(tmp_path, shapes_coco):
    jpg = next((shapes_coco / "val2017").glob("*.jpg"))
    whole = jpg.read_bytes()
    cases = {"whole": whole, "padded": whole + b"\0" * 300, "cut": whole[:-200],
             "cut_padded": whole[:-200] + b"\0" * 300, "png": b"\x89PNG\r\n\x1a\n" + b"\0" * 50}
    got = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        got[name] = detimages.jpeg_truncated(tmp_path / name)
    assert got == {"whole": False, "padded": False, "cut": True, "cut_padded": True, "png": False}


def _warn_in_child(path):
    detimages.warn_if_truncated_jpeg(path)


def test_training_reads_name_one_truncated_jpeg_per_run_across_workers(planted, tmp_path, log_lines):
    """YOLOX's reader decodes a cut JPEG (grey tail) and names it once; a forked worker that
    named one stops the parent naming another (the flag is shared memory, not a global)."""
    from yolox.data import COCODataset

    root, what = planted
    detimages._TRUNCATED_NAMED[0] = 0
    ds = COCODataset(root, img_size=(320, 320))
    row = ds.source.table.row(what["truncated"]["id"])
    img = ds.pull_item(row)[0]
    assert img is not None and ds.unreadable == set()           # decoded, as OpenCV does
    named = [ln for ln in log_lines if "truncated JPEG" in ln]
    assert len(named) == 1 and what["truncated"]["file_name"] in named[0]
    ds.pull_item(row)
    assert len([ln for ln in log_lines if "truncated JPEG" in ln]) == 1
    # a worker forked before any was named names one; the parent then names none
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((root / "train2017" / what["truncated"]["file_name"]).read_bytes())
    detimages._TRUNCATED_NAMED[0] = 0
    child = multiprocessing.get_context("fork").Process(target=_warn_in_child, args=(cut,))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and detimages._TRUNCATED_NAMED[0] == 1
    before = len(log_lines)
    detimages.warn_if_truncated_jpeg(cut)
    assert len(log_lines) == before


def test_ssd_names_the_truncated_jpeg_it_skips(planted, log_lines):
    from ssd.data import CocoDetection

    root, what = planted
    ds = CocoDetection(root / "train2017", root / "annotations" / "instances_train2017.json")
    index = ds.ids.index(what["truncated"]["id"])
    assert ds[index][3] != what["truncated"]["id"]                 # PIL refuses it: the next image
    skipped = [ln for ln in log_lines if "skipping unreadable image" in ln]
    assert skipped and what["truncated"]["file_name"] in skipped[0] and "truncated" in skipped[0]


def test_duplicate_mask_flags_repeats_not_first_occurrences():
    keys = np.array([[1, 2, 3], [1, 2, 3], [1, 2, -0.0], [1, 2, 0.0], [0, 0, 0], [1, 2, 3], [1, 2, 4]])
    np.testing.assert_array_equal(cd.duplicate_mask(keys), [0, 1, 0, 1, 0, 1, 0])
    assert cd.duplicate_mask(np.zeros((0, 6))).shape == (0,)


def test_yolo_data_yaml(shapes_coco, tmp_path):
    """A YOLO data.yaml (the generated COCO set's images and boxes as label files) is checked
    the same way; a label file without an image counts as an annotation of no listed image."""
    root = tmp_path / "yolo"
    for split, count in (("train", 6), ("val", 4)):
        data = json.loads((shapes_coco / "annotations" / f"instances_{split}2017.json").read_text())
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for im in data["images"][:count]:
            (root / "images" / split / im["file_name"]).write_bytes(
                (shapes_coco / f"{split}2017" / im["file_name"]).read_bytes())
            lines = [f"{a['category_id'] - 1} {(a['bbox'][0] + a['bbox'][2] / 2) / im['width']:.6f} "
                     f"{(a['bbox'][1] + a['bbox'][3] / 2) / im['height']:.6f} {a['bbox'][2] / im['width']:.6f} "
                     f"{a['bbox'][3] / im['height']:.6f}" for a in data["annotations"] if a["image_id"] == im["id"]]
            (root / "labels" / split / (im["file_name"][:-4] + ".txt")).write_text("\n".join(lines))
    (root / "labels" / "train" / "no_such_image.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                    f"names: {list(NAMES)}\n")
    (train, val), _ = cd.check_data(root / "data.yaml")
    assert (train.kind, train.name, val.name) == ("YOLO", "train", "val")
    assert (train.listed, train.in_index) == (6, 6) and train.defects["orphans"] == 1
    assert train.problems == 1 and val.problems == 0
