"""Which data layout a path holds, and its splits as ``detcore`` sources: the ONE place that looks
at the layout, so the trainers, the evaluators, the data check and the converter never branch on
it (they read ``IndexedSource``'s in-memory index, whatever the files were).

Layouts, in the order they are recognised:

- YOLO: a ``*.yaml`` / ``*.yml`` file (Ultralytics' data.yaml, ``detcore.data.yolo``), or a folder
  holding ``data.yaml`` (or exactly one yaml) and no ``annotations/``;
- Pascal VOC: a devkit (a folder holding VOC<year>/Annotations, also one level down in
  ``VOCdevkit/``) or one VOC<year>/ folder (``detcore.data.voc``): train is the trainval lists of
  2007 and 2012, val VOC2007 test (as the detection papers);
- COCO: a folder holding ``annotations/`` (``annotations/instances_{train,val}2017.json`` with
  ``train2017/`` and ``val2017/`` by default; the exp's ``train_ann`` / ``val_ann`` may name
  other jsons);
- MOT (MOTChallenge): a folder whose sequences (``SEQ/seqinfo.ini`` + ``SEQ/img1/``) lie in
  ``train/``, ``val/``, ``test/`` or directly in it (``detcore.data.mot``: splits, classes and
  ignore regions there).

Anything else is one line saying what was looked for.
"""
import re
from collections import namedtuple
from pathlib import Path

from accel.errors import UserError

YAML_SUFFIXES = (".yaml", ".yml")
# split -> (image folder, instances json) of a COCO root
COCO_SPLITS = {"train": ("train2017", "instances_train2017.json"),
               "val": ("val2017", "instances_val2017.json"),
               "test": ("test2017", "instances_test2017.json")}
# Pascal VOC as the detection papers train and test it: 2007+2012 trainval, VOC2007 test.
VOC_TRAIN = (("2007", "trainval"), ("2012", "trainval"))
VOC_TEST = ("2007", "test")
_VOC_YEAR = re.compile(r"VOC\d{4}")
LOOKED_FOR = ("a COCO root (annotations/instances_train2017.json, train2017/, val2017/), a VOC devkit "
              "(VOC<year>/Annotations, JPEGImages, ImageSets/Main), a YOLO data.yaml (or a folder "
              "holding one) or a MOT root (sequences with seqinfo.ini and img1/, in train/ or directly)")

Layout = namedtuple("Layout", "kind path years")
Layout.__doc__ = ("A detected layout: ``kind`` 'coco' | 'voc' | 'yolo' | 'mot'; ``path`` the COCO root, the "
                  "VOC devkit, the yaml file or the MOT root; ``years`` the VOC years (empty otherwise).")


def voc_layout(root):
    """(devkit folder, years to use) when ``root`` is a VOC devkit (a folder holding VOC2007/,
    VOC2012/ ...; also a folder holding VOCdevkit/ as ``tools/make_shapes.py --format voc``
    writes it) or one VOC<year>/ folder (then that year only); None for anything else."""
    root = Path(root)
    if _VOC_YEAR.fullmatch(root.name) and (root / "Annotations").is_dir():
        return root.parent, (root.name[3:],)
    for devkit in (root, root / "VOCdevkit"):
        years = tuple(sorted(p.name[3:] for p in devkit.glob("VOC[0-9][0-9][0-9][0-9]")
                             if (p / "Annotations").is_dir()))
        if years:
            return devkit, years
    return None


def _yaml_in(folder):
    """The data yaml of a folder: ``data.yaml`` / ``data.yml``, else its only yaml; None."""
    for name in ("data.yaml", "data.yml"):
        if (folder / name).is_file():
            return folder / name
    found = [p for p in sorted(folder.iterdir()) if p.suffix in YAML_SUFFIXES and p.is_file()]
    return found[0] if len(found) == 1 else None


def detect_layout(path, flag="--data"):
    """The ``Layout`` at ``path``; one-line UserError (starting with ``flag``) for anything else.
    (Named for what it detects: ``accel.launch.detect`` is the process layout of a launch.)"""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in YAML_SUFFIXES:
            return Layout("yolo", path, ())
        raise UserError(f"{flag}: {path} is a file but not a data yaml; expected {LOOKED_FOR}")
    if not path.is_dir():
        raise UserError(f"{flag}: {path} does not exist; expected {LOOKED_FOR}")
    voc = voc_layout(path)
    if voc is not None:
        return Layout("voc", voc[0], voc[1])
    if (path / "annotations").is_dir():
        return Layout("coco", path, ())
    from detcore.data.mot import is_mot_root
    if is_mot_root(path):
        return Layout("mot", path, ())
    found = _yaml_in(path)
    if found is not None:
        return Layout("yolo", found, ())
    raise UserError(f"{flag}: {path} holds none of the data layouts: no annotations/ (a COCO root), "
                    "no VOC<year>/Annotations (a VOC devkit), no data.yaml (YOLO), no sequences with "
                    "seqinfo.ini and img1/ (MOT)")


def coco_paths(root, flag="--data"):
    """(train images, train json, val images, val json) under a COCO root; UserError if absent."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{flag}: {root} is not a directory (expected a COCO root with train2017/, "
                        "val2017/ and annotations/)")
    (train, train_json), (val, val_json) = COCO_SPLITS["train"], COCO_SPLITS["val"]
    return root / train, root / "annotations" / train_json, root / val, root / "annotations" / val_json


def _image_set(devkit, year, name):
    return devkit / f"VOC{year}" / "ImageSets" / "Main" / f"{name}.txt"


def voc_sets(devkit, years, split, flag="--data"):
    """The (year, name) image sets of ``split`` in a VOC devkit: train = the trainval lists of
    2007 and 2012 (those of ``years`` that have one, else every year's trainval); val and test =
    VOC2007 test (else the test list of the first year given)."""
    if split == "train":
        sets = [(y, n) for y, n in VOC_TRAIN if y in years and _image_set(devkit, y, n).is_file()]
        sets = sets or [(y, "trainval") for y in years if _image_set(devkit, y, "trainval").is_file()]
        if not sets:
            raise UserError(f"{flag}: VOC data {devkit} has no ImageSets/Main/trainval.txt in "
                            f"{', '.join(f'VOC{y}' for y in years)} to train on")
        return sets
    test = VOC_TEST if VOC_TEST[0] in years else (years[0], "test")
    if not _image_set(devkit, *test).is_file():
        raise UserError(f"{flag}: VOC data {devkit} has no {_image_set(devkit, *test)} to evaluate on "
                        "(evaluation uses VOC2007 test)")
    return [test]


def open_split(path, split, class_names=None, ann_file=None, img_folder=None, flag="--data"):
    """The ``IndexedSource`` of ``split`` ('train', 'val' or 'test') of the data at ``path``.

    ``class_names`` fixes the classes where the layout infers them (VOC: the train split's names
    for the val split) and is checked where it does not (YOLO: the yaml's ``names``, MOT: the
    sequences' classes); COCO's
    come from its categories. ``ann_file`` / ``img_folder``: a COCO split's json name (under
    ``annotations/``) and image folder, when not the 2017 defaults (YOLOX exps' ``train_ann``).
    """
    if split not in COCO_SPLITS:
        raise ValueError(f"split must be one of {', '.join(COCO_SPLITS)}, got {split!r}")
    layout = detect_layout(path, flag)
    if layout.kind == "yolo":
        from detcore.data.yolo import YoloSource
        return YoloSource(layout.path, split, class_names=class_names)
    if layout.kind == "mot":
        from detcore.data.mot import MotSource
        return MotSource(layout.path, split, class_names=class_names, flag=flag)
    if layout.kind == "voc":
        from detcore.data.voc import VocSource
        return VocSource(layout.path, voc_sets(layout.path, layout.years, split, flag), class_names=class_names)
    from detcore.data.coco import CocoSource
    folder, json_name = COCO_SPLITS[split]
    return CocoSource(layout.path / "annotations" / (ann_file or json_name), layout.path / (img_folder or folder))


def open_sources(root, train=True, class_names=None, flag="--data"):
    """(train source or None, val source) of the data at ``root``, labelled alike: the val split
    takes the train split's classes where the layout infers them (VOC), and must list the same
    classes otherwise. ``train=False`` (evaluation only) reads what the val split's labels need
    only: ``class_names`` (a checkpoint's) fixes them where the layout infers them."""
    layout = detect_layout(root, flag)
    train_src = None
    if train or (layout.kind == "voc" and class_names is None):
        train_src = open_split(root, "train", class_names=class_names, flag=flag)
        class_names = train_src.class_names
    try:
        val_src = open_split(root, "val", class_names=class_names if layout.kind != "coco" else None, flag=flag)
    except UserError as exc:
        if train_src is None or layout.kind != "voc":
            raise
        where = " + ".join(f"VOC{y} {n}" for y, n in voc_sets(layout.path, layout.years, "train", flag))
        raise UserError(f"{flag}: {exc} (the classes of the training split, {where}; the val split "
                        "must use the same names)") from None
    if train_src is not None and val_src.class_ids != train_src.class_ids:
        raise UserError(f"{flag}: {val_src.ann_file} and {train_src.ann_file} list different categories")
    return (train_src if train else None), val_src


def class_names_of(path, flag="--data"):
    """The class names of the data at ``path`` without reading more than they need: a data
    yaml's ``names``, a COCO root's val categories, a VOC devkit's train xmls (what the demo and
    the Python API's predict need to name classes; a MOT root's seqinfo.ini files)."""
    layout = detect_layout(path, flag)
    if layout.kind == "mot":
        from detcore.data.mot import class_names_of as mot_names
        return mot_names(layout.path, flag)
    if layout.kind == "yolo":
        from detcore.data.yolo import DataYaml
        return DataYaml(layout.path).names
    if layout.kind == "coco":
        from detcore.data.coco import read_json
        from detcore.data.index import check_instances
        ann = layout.path / "annotations" / COCO_SPLITS["val"][1]
        cats = {c["id"]: c for c in check_instances(read_json(ann, polygons=False), ann)["categories"]}
        return tuple(cats[i].get("name", str(i)) for i in sorted(cats))
    return open_split(path, "train", flag=flag).class_names
