"""The YOLO (Ultralytics) layout: data.yaml reading, Ultralytics' label rule, the one cleaning
policy's messages for bad labels, format detection, and the class count taken from the data."""
import os
import shutil

import numpy as np
import pytest
import torch

from accel.errors import UserError
from detcore.data.shapes import make_shapes
from detcore.data.layout import detect_layout, open_sources, open_split
from detcore.data.yolo import YoloSource, label_path
from yolox_tools import TINY


@pytest.fixture(scope="module")
def yolo_set(tmp_path_factory):
    """6 train / 3 val shapes images in the YOLO layout, and the same set as COCO."""
    root = tmp_path_factory.mktemp("yolo_fmt")
    make_shapes(root / "yolo", 6, 3, seed=2, fmt="yolo")
    make_shapes(root / "coco", 6, 3, seed=2)
    return root


def copy_set(yolo_set, tmp_path):
    """A writable copy of the YOLO set (its data.yaml path)."""
    shutil.copytree(yolo_set / "yolo", tmp_path / "y")
    return tmp_path / "y" / "data.yaml"


def test_yolo_split_equals_the_coco_export(yolo_set):
    """Same images and boxes as the COCO export through the same index (labels: images -> labels)."""
    y, c = open_split(yolo_set / "yolo" / "data.yaml", "train"), open_split(yolo_set / "coco", "train")
    assert y.class_names == c.class_names == ("circle", "rectangle", "triangle", "star")
    assert np.array_equal(y.table.counts, c.table.counts) and np.array_equal(y.table.cls, c.table.cls)
    wh = np.tile(c.table.hw[np.repeat(np.arange(len(c.table)), c.table.counts)][:, ::-1], 2)
    assert (np.abs(y.table.boxes - c.table.boxes) <= 1e-6 * wh).all()
    assert label_path(y.path(y.ids[0])) == yolo_set / "yolo" / "labels" / "train" / "000000000001.txt"
    assert len(y.coco.getImgIds()) == len(y.ids)            # scoring index built from the table


def test_yaml_forms_names_map_txt_lists_and_polygons(yolo_set, tmp_path):
    data = copy_set(yolo_set, tmp_path)
    root = data.parent
    imgs = sorted((root / "images" / "train").glob("*.jpg"))
    (root / "half.txt").write_text("".join(f"./images/train/{p.name}\n" for p in imgs[:3]))
    (root / "labels" / "train" / imgs[0].with_suffix(".txt").name).write_text("2 0.1 0.1 0.5 0.2 0.3 0.6\n")
    data.write_text("names: {0: circle, 1: rectangle, 2: triangle, 3: star}\nnc: 4\n"
                    "train: [half.txt, images/val]\nval: images/val\n")
    src = YoloSource(data, "train")
    assert len(src.ids) == 3 + 3 and src.class_names[2] == "triangle"
    boxes, cls = src.boxes[src.ids[0]]
    h, w = src.size(src.ids[0])
    assert cls.tolist() == [2]                               # the polygon's bounding box
    assert np.allclose(boxes[0], [0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h])


@pytest.mark.parametrize("line, needle", [
    ("0 0.5 0.5 0.2", "line 2: expected 'class cx cy w h'"),
    ("0 0.5 abc 0.2 0.2", "line 2: not numbers"),
    ("7 0.5 0.5 0.2 0.2", "line 2: class id 7 is not one of 0..3"),
    ("1.5 0.5 0.5 0.2 0.2", "line 2: class id 1.5"),
])
def test_bad_label_line_stops_naming_file_and_line(yolo_set, tmp_path, line, needle):
    data = copy_set(yolo_set, tmp_path)
    label = data.parent / "labels" / "train" / "000000000002.txt"
    label.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(UserError) as err:
        YoloSource(data, "train")
    assert f"label file {label} {needle}" in str(err.value) and "\n" not in str(err.value)


def test_out_of_range_boxes_are_clipped_and_counted_pixel_labels_stop(yolo_set, tmp_path, log_lines):
    data = copy_set(yolo_set, tmp_path)
    label = data.parent / "labels" / "train" / "000000000003.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n1 0.95 0.5 0.3 0.2\n")     # x2 = 1.1
    src = YoloSource(data, "train")
    boxes, _ = src.boxes[2]
    assert boxes[1, 2] == src.size(2)[1]                              # clipped to the width
    assert src.table.cleaning["clipped"] >= 1
    assert any(f"label file {label} line 2" in ln and "clipped" in ln for ln in log_lines)
    for k in range(1, 7):                                              # every box in pixels
        (data.parent / "labels" / "train" / f"{k:012d}.txt").write_text("0 120 80 40 30\n")
    with pytest.raises(UserError, match="outside \\[0, 1\\].*normalised"):
        YoloSource(data, "train")


def test_orphan_labels_missing_images_and_yaml_mistakes(yolo_set, tmp_path, log_lines):
    data = copy_set(yolo_set, tmp_path)
    root = data.parent
    orphan = root / "labels" / "train" / "zz_no_image.txt"
    orphan.write_text("0 0.5 0.5 0.2 0.2\n")
    src = YoloSource(data, "train")
    assert src.orphan_labels == [str(orphan)] and len(src.ids) == 6
    assert any("1 label files of train without an image" in ln and str(orphan) in ln for ln in log_lines)
    # a .txt list naming images that are gone: skipped with a warning, a stop when most are
    names = sorted(p.name for p in (root / "images" / "train").glob("*.jpg"))
    (root / "train.txt").write_text("".join(f"images/train/{n}\n" for n in names))
    data.write_text("names: [circle, rectangle, triangle, star]\ntrain: train.txt\nval: images/val\n")
    (root / "images" / "train" / names[0]).unlink()
    assert len(YoloSource(data, "train").ids) == 5
    assert any("skipping 1 of 6 images listed in" in ln for ln in log_lines)
    for n in names[1:4]:
        (root / "images" / "train" / n).unlink()
    with pytest.raises(UserError, match="4 of 6 images listed in .* are missing"):
        YoloSource(data, "train")
    data.write_text("train: images/train\nval: images/val\n")
    with pytest.raises(UserError, match=f"data yaml {data}: no 'names'"):
        YoloSource(data, "val")
    data.write_text("names: [a, b]\ntrain: images/train\nval: images/nowhere\n")
    with pytest.raises(UserError, match=f"data yaml {data} line 3: val entry 'images/nowhere' not found"):
        YoloSource(data, "val")
    data.write_text("names: [a, b\n")
    with pytest.raises(UserError, match=f"data yaml {data} line 2: not valid YAML"):
        YoloSource(data, "val")


def test_one_detection_function_and_none_of_the_layouts(yolo_set, tmp_path):
    assert detect_layout(yolo_set / "yolo").kind == "yolo"                    # a folder holding data.yaml
    assert detect_layout(yolo_set / "yolo" / "data.yaml").kind == "yolo"
    assert detect_layout(yolo_set / "coco").kind == "coco"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds none of the data layouts: no annotations/ .*no data.yaml"):
        detect_layout(tmp_path / "empty", "--data_dir")
    with pytest.raises(UserError, match="does not exist; expected a COCO root"):
        open_sources(tmp_path / "nope")
    train, val = open_sources(yolo_set / "yolo" / "data.yaml")        # SSD's --data
    assert (len(train.ids), len(val.ids)) == (6, 3)


def _exp(data, *overrides):
    from yolox.core.cli import build_exp
    from yolox.tools import train

    args = train.make_parser().parse_args(["-n", "yolox-nano", "--data_dir", str(data), *TINY, *overrides])
    return build_exp(args), args


def test_class_count_from_the_data_or_one_line_before_the_first_step(yolo_set, tmp_path, log_lines):
    exp, _ = _exp(yolo_set / "yolo" / "data.yaml")
    assert exp.sync_classes() == ("circle", "rectangle", "triangle", "star")
    assert exp.num_classes == 4 and exp.class_names[3] == "star"
    assert any("num_classes 4 from the data" in ln for ln in log_lines)
    assert exp.get_model().head.num_classes == 4


def test_explicit_class_count_that_differs_stops_before_the_first_step(yolo_set, tmp_path):
    # explicitly 80 on 4-category COCO data: refused when the trainer reads the data, before
    # any step (it used to train an epoch and die in evaluation with an IndexError)
    exp, args = _exp(yolo_set / "coco", "num_classes", "80", "max_epoch", "1", "output_dir", str(tmp_path))
    trainer = exp.get_trainer(args)
    with pytest.raises(UserError, match=r"num_classes 80 \(set by a num_classes override\) but the data "
                                        r".* names 4 classes"):
        trainer.before_train()
    trainer.after_train()
    assert not list(tmp_path.rglob("latest_ckpt.pth"))
    from yolox.exp import get_exp
    shapes = get_exp(None, "yolox-nano-shapes")          # the exp file sets num_classes 4
    shapes.data_dir = str(yolo_set / "yolo" / "data.yaml")
    assert shapes.sync_classes() is not None
    shapes.num_classes = 3
    with pytest.raises(UserError, match="set by the exp file"):
        shapes.sync_classes()


def test_empty_labels_folder_stops_before_the_first_step_unless_allowed(yolo_set, tmp_path):
    """A YOLO set whose train labels folder is empty used to train silently on background only:
    one line naming the split and the labels folder, before any step; ``allow_empty_train True``
    (the exp option) trains anyway."""
    data = copy_set(yolo_set, tmp_path)
    labels = data.parent / "labels" / "train"
    for f in labels.glob("*.txt"):
        f.unlink()
    exp, args = _exp(data, "max_epoch", "1", "output_dir", str(tmp_path / "out"))
    trainer = exp.get_trainer(args)
    with pytest.raises(UserError) as stop:
        trainer.before_train()
    trainer.after_train()
    assert str(stop.value) == (f"the train split has no boxes (6 images, labels in {labels}): training "
                               "would learn background only; add labels, or allow it with the exp option "
                               "allow_empty_train True")
    exp, args = _exp(data, "max_epoch", "1", "output_dir", str(tmp_path / "out2"), "allow_empty_train", "True")
    trainer = exp.get_trainer(args)
    trainer.before_train()
    trainer.after_train()


def test_exp_table_at_start_shows_the_class_count_used(yolo_set, tmp_path):
    """The exp table of YOLOX training used to show num_classes 80 one line before "num_classes 4
    from the data": it is printed after the data set the count."""
    exp, args = _exp(yolo_set / "yolo" / "data.yaml", "max_epoch", "1", "output_dir", str(tmp_path))
    trainer = exp.get_trainer(args)
    trainer.before_train()
    trainer.after_train()
    log = next(tmp_path.rglob("train_log.txt")).read_text()
    synced, table = log.index("num_classes 4 from the data"), log.index("exp value:")
    row = next(r for r in log[table:].splitlines() if " num_classes " in r)
    assert table > synced and row.split("\u2502")[2].strip() == "4", row


def test_checkpoint_of_another_class_count_says_so(yolo_set, tmp_path):
    """An 80-class checkpoint evaluated or resumed on 4-class data: the line says the class counts
    and what to do, not "belongs to another model (shape mismatch for head.cls_preds...)"."""
    from detcore.training.checkpoints import save_atomic
    from yolox.core.cli import load_weights
    from yolox.exp import get_exp

    ckpt = tmp_path / "coco80.pth"
    save_atomic({"model": get_exp(None, "yolox-nano").get_model().state_dict()}, ckpt)
    exp, _ = _exp(yolo_set / "yolo" / "data.yaml")
    exp.sync_classes("val")
    with pytest.raises(UserError) as stop:                       # tools/eval.py, the demo, the API
        load_weights(exp, ckpt, "cpu")
    assert str(stop.value) == (
        f"checkpoint {ckpt}: does not fit this model (the checkpoint has 80 classes, the data has 4 "
        "(circle, rectangle, triangle, star)); use it on the data it was trained on, or fine-tune it on "
        f"this data first (tools/train.py -c {ckpt}, without --resume)")
    from yolox.core.cli import build_exp
    from yolox.tools import train

    args = train.make_parser().parse_args(["-n", "yolox-nano", "--resume", "-c", str(ckpt), "--data_dir",
                                           str(yolo_set / "yolo" / "data.yaml"), *TINY, "max_epoch", "1",
                                           "output_dir", str(tmp_path / "out")])
    exp = build_exp(args)
    trainer = exp.get_trainer(args)
    with pytest.raises(UserError) as stop:                       # tools/train.py --resume
        trainer.before_train()
    trainer.after_train()
    assert str(stop.value) == (
        f"checkpoint {ckpt}: does not fit this model (the checkpoint has 80 classes, the data has 4 "
        f"(circle, rectangle, triangle, star)); to train this data from it, fine-tune: -c {ckpt} without --resume")


def test_api_evaluates_and_names_classes_from_a_data_yaml(yolo_set, tmp_path):
    """Detector(data_dir=data.yaml): the model takes the yaml's 4 classes (exp default 80), the
    evaluation scores the yaml's val split and predict names the yaml's classes."""
    from yolox.api import Detector

    data = yolo_set / "yolo" / "data.yaml"
    det = Detector("yolox-nano", data_dir=data, input_size=(160, 160), test_size=(160, 160),
                   data_num_workers=0, output_dir=str(tmp_path))
    exp = det._data_exp()
    exp.sync_classes()
    torch.manual_seed(0)
    ckpt = tmp_path / "w.pth"
    torch.save({"model": exp.get_model().state_dict()}, ckpt)
    result = det.evaluate(ckpt=str(ckpt), device="cpu", batch_size=4)
    assert "Average Precision" in result.summary or "no detections" in result.summary
    found = det.predict(str(next((data.parent / "images" / "val").glob("*.jpg"))), ckpt=str(ckpt),
                        device="cpu", conf=0.0)
    assert set(found.labels) <= {"circle", "rectangle", "triangle", "star"} and len(found.labels) > 0
    assert os.path.isfile(ckpt)
