"""Pascal VOC reading (detcore.data.voc.VocSource, yolox VOCDetection): the same boxes as the COCO export
of the same generated images, the shared cleaning policy, bad input as one line naming the file,
and a tiny YOLOX-nano training run + VOC eval through tools/train.py."""
import csv

import numpy as np
import pytest

from accel.errors import UserError
from conftest import load_make_shapes
from detcore.data.coco import CocoSource
from detcore.data.voc import VocSource
from yolox_tools import ROOT, load_tool

CATEGORIES = ("circle", "rectangle", "triangle", "star")
VOC_SHAPES_EXP = str(ROOT / "exps" / "example" / "shapes" / "yolox_nano_voc_shapes.py")


@pytest.fixture(scope="module")
def shapes_pair(tmp_path_factory):
    """The same 8 train / 4 val images (seed 0) exported as COCO and as VOC."""
    root = tmp_path_factory.mktemp("voc_pair")
    make = load_make_shapes()
    return make(root / "coco", 8, 4, seed=0), make(root / "voc", 8, 4, seed=0, fmt="voc") / "VOCdevkit"


@pytest.mark.parametrize("split, voc_set", [("train2017", "trainval"), ("val2017", "test")])
def test_voc_source_has_the_coco_exports_boxes(shapes_pair, split, voc_set):
    coco_root, devkit = shapes_pair
    coco = CocoSource(coco_root / "annotations" / f"instances_{split}.json", coco_root / split)
    voc = VocSource(devkit, [("2007", voc_set)], class_names=CATEGORIES)
    assert voc.ids == [i - 1 for i in coco.ids] and voc.class_ids == [0, 1, 2, 3]
    n_difficult = 0
    for coco_id, voc_id in zip(coco.ids, voc.ids):
        cboxes, ccls = coco.boxes[coco_id]
        vboxes, vcls = voc.boxes[voc_id]
        # COCO [x, y, x + w, y + h] covers pixels x .. x + w - 1; VOC writes them 1-based
        # (x + 1 .. x + w) and upstream's reader subtracts 1: x2 is the last pixel, one less
        np.testing.assert_array_equal(vboxes, cboxes - [0, 0, 1, 1])
        np.testing.assert_array_equal(vcls, ccls)
        assert voc.size(voc_id) == coco.size(coco_id)
        assert voc.path(voc_id).read_bytes() == coco.path(coco_id).read_bytes()   # same images
        # difficult: the generator's rule, longer side under 24 pixels
        sides = (cboxes[:, 2:] - cboxes[:, :2]).max(axis=1) if len(cboxes) else np.zeros(0)
        np.testing.assert_array_equal(voc.difficult[voc_id], sides < 24)
        n_difficult += int(voc.difficult[voc_id].sum())
    if voc_set == "trainval":
        assert n_difficult > 0                   # the set exercises the difficult path
    # the in-memory COCO index holds the same boxes, difficult ones as crowd (COCOeval ignores them)
    anns = voc.coco.loadAnns(voc.coco.getAnnIds(imgIds=voc.ids))
    assert len(anns) == sum(len(voc.boxes[i][0]) for i in voc.ids)
    assert sum(a["iscrowd"] for a in anns) == sum(int(voc.difficult[i].sum()) for i in voc.ids)


def test_class_names_none_are_the_sorted_names_found(shapes_pair):
    _, devkit = shapes_pair
    given = VocSource(devkit, [("2007", "trainval")], class_names=CATEGORIES)
    inferred = VocSource(devkit, [("2007", "trainval")])
    occurring = {CATEGORIES[c] for i in given.ids for c in given.boxes[i][1]}
    # only the names the listed xmls use (these 8 images have no triangle), sorted
    assert inferred.class_names == tuple(sorted(occurring)) == ("circle", "rectangle", "star")
    for i in given.ids:
        names = [CATEGORIES[c] for c in given.boxes[i][1]]
        assert [inferred.class_names[c] for c in inferred.boxes[i][1]] == names
    # two image sets: ids run on through both lists, in order
    both = VocSource(devkit, [("2007", "trainval"), ("2007", "test")], class_names=CATEGORIES)
    assert both.ids == list(range(12)) and both.ann_file == devkit


def test_voc_detection_letterboxes_like_coco_dataset(shapes_pair):
    from yolox.data import COCODataset, MosaicDetection, TrainTransform, VOCDetection

    coco_root, devkit = shapes_pair
    voc = VOCDetection(devkit, image_sets=[("2007", "trainval")], img_size=(320, 256), class_names=CATEGORIES)
    coco = COCODataset(coco_root, img_size=(320, 256))
    assert len(voc) == len(coco) == 8 and voc._classes == CATEGORIES and voc.class_ids == [0, 1, 2, 3]
    for index in (1, 3, 5):
        vimg, vlab, vinfo, vid = voc.pull_item(index)
        cimg, clab, cinfo, cid = coco.pull_item(index)
        r = min(320 / vinfo[0], 256 / vinfo[1])
        assert vinfo == cinfo and int(vid[0]) == int(cid[0]) - 1
        np.testing.assert_array_equal(vimg, cimg)
        np.testing.assert_allclose(vlab, clab - [0, 0, r, r, 0], rtol=1e-12)
        assert len(voc.difficult[int(vid[0])]) == len(vlab)
    # MosaicDetection and the trainer's transform take it as they take COCODataset
    voc.preproc = None
    mosaic = MosaicDetection(voc, img_size=(320, 256), mosaic=True,
                             preproc=TrainTransform(max_labels=50, flip_prob=0.5, hsv_prob=1.0))
    img, target, _, _ = mosaic[(True, 2, 7)]
    assert img.shape == (3, 320, 256) and target.shape == (50, 5)


def test_default_class_names_are_voc_and_reject_other_names(shapes_pair):
    from yolox.data import VOC_CLASSES, VOCDetection

    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    _, devkit = shapes_pair
    with pytest.raises(UserError) as info:
        VOCDetection(devkit, image_sets=[("2007", "test")])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"annotation file {devkit}/VOC2007/Annotations/")
    assert ".xml: class '" in msg and "is not one of class_names ['aeroplane'" in msg


# ---------------------------------------------------------------------------- bad input
def small_set(root, n=4, objects=("<object><name>cat</name><difficult>0</difficult><bndbox><xmin>3</xmin>"
                                  "<ymin>4</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>"),
              year="2007", name="trainval", prefix=""):
    """``n`` 50 x 40 images ``{prefix}00000i`` with the same ``objects``, listed in
    VOC{year}/ImageSets/Main/{name}.txt under the devkit ``root``."""
    import cv2

    base = root / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"{prefix}{i:06d}" for i in range(n)]
    for stem in stems:
        cv2.imwrite(str(base / "JPEGImages" / f"{stem}.jpg"), np.full((40, 50, 3), 90, np.uint8))
        (base / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>50</width><height>40</height></size>{objects}</annotation>")
    (base / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    return root


def expect_error(match, *args, **kwargs):
    with pytest.raises(UserError, match=match) as info:
        VocSource(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unparsable_xml_names_the_file(tmp_path):
    root = small_set(tmp_path)
    bad = root / "VOC2007" / "Annotations" / "000002.xml"
    bad.write_text("<annotation><size><width>50</wid")
    expect_error(f"^annotation file {bad} is not valid XML", root, [("2007", "trainval")])
    bad.write_text("<annotation><object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    expect_error(f"^annotation file {bad}: object 0 \\(cat\\) needs numeric", root, [("2007", "trainval")])


def test_unknown_class_names_the_file_and_class(tmp_path):
    root = small_set(tmp_path)
    dog = root / "VOC2007" / "Annotations" / "000003.xml"
    dog.write_text(dog.read_text().replace("<name>cat</name>", "<name>dog</name>"))
    expect_error(f"^annotation file {dog}: class 'dog' is not one of class_names \\['cat'\\]",
                 root, [("2007", "trainval")], class_names=("cat",))
    assert VocSource(root, [("2007", "trainval")]).class_names == ("cat", "dog")


def test_missing_images_skipped_then_most_missing_is_an_error(tmp_path, log_lines):
    root = small_set(tmp_path)
    jpgs = sorted((root / "VOC2007" / "JPEGImages").glob("*.jpg"))
    jpgs[1].unlink()
    source = VocSource(root, [("2007", "trainval")])
    assert source.ids == [0, 2, 3]
    warned = [ln for ln in log_lines if "1 of 4 images listed in" in ln]
    assert len(warned) == 1 and str(jpgs[1]) in warned[0] and "trainval.txt" in warned[0]
    jpgs[2].unlink()
    jpgs[3].write_bytes(b"")                     # empty counts as missing
    expect_error(f"3 of 4 images listed in {root / 'VOC2007/ImageSets/Main/trainval.txt'} are "
                 f"missing or empty \\(e.g. {jpgs[1]}\\)", root, [("2007", "trainval")])


def test_missing_list_xml_and_size_fallback(tmp_path, log_lines):
    root = small_set(tmp_path)
    expect_error(f"^image set file {root / 'VOC2007/ImageSets/Main/val.txt'} not found", root, [("2007", "val")])
    expect_error(f"^VOC data dir {tmp_path / 'nope'} not found", tmp_path / "nope", [("2007", "trainval")])
    (root / "VOC2007" / "Annotations" / "000000.xml").unlink()
    # no <size>: read from the image header (50 x 40)
    xml = root / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<size><width>50</width><height>40</height></size>", ""))
    source = VocSource(root, [("2007", "trainval")])
    assert source.ids == [1, 2, 3] and source.size(1) == (40, 50)
    np.testing.assert_array_equal(source.boxes[1][0], [[2, 3, 19, 29]])     # 1-based -> 0-based
    assert any("1 of 4 images listed in" in ln and "000000.xml" in ln for ln in log_lines)


def test_boxes_clipped_and_degenerate_dropped_by_the_shared_policy(tmp_path, log_lines):
    objects = "".join(f"<object><name>cat</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
                      f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                      for b, d in (((1, 1, 70, 20), 1), ((5, 5, 5, 30), 0), ((2, 2, 10, 10), 0)))
    source = VocSource(small_set(tmp_path, n=1, objects=objects), [("2007", "trainval")])
    # 0-based [0, 0, 69, 19] clipped to the 50 px width; the 1-pixel-wide box has zero area
    np.testing.assert_array_equal(source.boxes[0][0], [[0, 0, 50, 19], [1, 1, 9, 9]])
    np.testing.assert_array_equal(source.difficult[0], [True, False])
    assert any("clipped 1 boxes" in ln and "dropped 1 with zero area" in ln for ln in log_lines)


def test_train_cli_bad_xml_is_one_line_exit_2(tmp_path, capsys):
    devkit = load_make_shapes()(tmp_path, 3, 2, seed=1, fmt="voc") / "VOCdevkit"
    bad = devkit / "VOC2007" / "Annotations" / "000002.xml"
    bad.write_text("not xml at all")
    with pytest.raises(SystemExit) as exc:
        load_tool("train").main(["-f", VOC_SHAPES_EXP, "--data_dir", str(devkit), "-b", "2", "--device", "cpu",
                                 "output_dir", str(tmp_path / "out"), "data_num_workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert err[-1].startswith(f"error: annotation file {bad} is not valid XML")


def test_train_and_eval_on_voc_shapes_prints_the_voc_table(tmp_path):
    """YOLOX-nano, 2 iterations at 64 px on 6 VOC shapes images, then VOCEvaluator on 3."""
    devkit = load_make_shapes()(tmp_path, 6, 3, seed=4, fmt="voc") / "VOCdevkit"
    out = tmp_path / "out"
    load_tool("train").main(["-f", VOC_SHAPES_EXP, "--data_dir", str(devkit), "-b", "2", "--device", "cpu",
                             "steps", "2", "max_epoch", "1", "input_size", "64,64", "test_size", "64,64",
                             "data_num_workers", "0", "output_dir", str(out), "print_interval", "1"])
    run = out / "yolox_nano_voc_shapes"
    log = (run / "train_log.txt").read_text()
    assert "Eval IoU : 0.50" in log and "VOC07 metric? Yes" in log
    for name in CATEGORIES:
        assert f"AP for {name} = " in log
    assert "Mean AP = " in log and "map_5095: " in log and "map_50: " in log
    assert (run / "best_ckpt.pth").is_file() and (run / "latest_ckpt.pth").is_file()
    # the per-class table, csv and plots of every format, VOC included
    assert "COCO-style per class at IoU 0.50, confidence" in log
    with open(run / "results_per_class.csv", newline="") as f:
        assert {r["class"] for r in csv.DictReader(f)} == {"all", *CATEGORIES}
    assert (run / "confusion_matrix.png").is_file() and (run / "labels.png").is_file()



def test_yolox_voc_s_exp_reads_voc0712_and_evaluates_voc2007_test(tmp_path):
    """Upstream's recipe: 20 classes, 2007 + 2012 trainval for training, 2007 test for eval."""
    from yolox.evaluators import VOCEvaluator
    from yolox.exp import get_exp

    obj = ("<object><name>{}</name><difficult>0</difficult><bndbox><xmin>3</xmin><ymin>4</ymin>"
           "<xmax>20</xmax><ymax>30</ymax></bndbox></object>")
    devkit = tmp_path / "VOCdevkit"
    for year, name, cls in (("2007", "trainval", "dog"), ("2012", "trainval", "person"), ("2007", "test", "car")):
        small_set(devkit, 2, obj.format(cls), year, name, prefix=name)
    exp = get_exp(str(ROOT / "exps" / "example" / "yolox_voc" / "yolox_voc_s.py"))
    assert (exp.num_classes, exp.depth, exp.width, exp.warmup_epochs) == (20, 0.33, 0.50, 1)
    assert (exp.mosaic_prob, exp.mixup_prob, exp.hsv_prob, exp.flip_prob) == (1.0, 1.0, 1.0, 0.5)
    assert exp.data_dir.endswith("VOCdevkit") and exp.exp_name == "yolox_voc_s"
    exp.merge(["input_size", "64,64", "test_size", "64,64", "data_num_workers", "0"])
    exp.data_dir = str(devkit)
    train = exp.get_dataset()
    assert len(train) == 4 and train.source.use_07_metric is False     # last listed year 2012
    assert sorted({train._classes[int(c)] for i in train.ids for c in train.source.boxes[i][1]}) == ["dog", "person"]
    evaluator = exp.get_evaluator(batch_size=2, is_distributed=False)
    assert isinstance(evaluator, VOCEvaluator)
    test = evaluator.dataloader.dataset
    assert len(test) == 2 and test.source.use_07_metric and test._classes[6] == "car"
