"""Reading a COCO instances json and its image folder, with ONE cleaning policy for both models.

The policy, applied once at start-up and vectorised over all annotations:
- a malformed or empty json, a missing folder: one-line UserError naming the file;
- a ``category_id`` that ``categories`` does not list: UserError naming the file and the id;
- crowd boxes are ignored; every box is clipped to its image FIRST, then boxes with zero area
  after clipping are dropped (a box lying outside its image is one of them); both are counted
  and logged once;
- listed images whose file is missing or empty are skipped with a warning naming one of them;
  images that fail to decode later are skipped the same way (``UnreadableImages``); when most of
  the set is unusable the run stops instead.
"""
import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import UserError

_IMAGE_KEYS = ("id", "width", "height")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")


def _first_bad(entries, keys):
    """Index of the first entry that is not a dict holding all ``keys`` (None when all are fine)."""
    return next((i for i, e in enumerate(entries)
                 if not isinstance(e, dict) or not all(k in e for k in keys)), None)


def load_coco(ann_file):
    """Parse and sanity-check an instances json, then build a pycocotools COCO index (quietly)."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise UserError(f"annotation file {ann_file} not found (expected COCO instances json)")
    try:
        data = json.loads(ann_file.read_bytes())
    except json.JSONDecodeError as exc:
        raise UserError(f"annotation file {ann_file} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"annotation file {ann_file} cannot be read ({exc})") from None
    return coco_from_dict(data, ann_file)


def coco_from_dict(data, ann_file):
    """Sanity-check a COCO instances dict and index it with pycocotools (quietly).

    Separate from ``load_coco`` so sources that are not a json file (Pascal VOC xmls) build the
    same dict in memory and share the checks, the index and the cleaning below; ``ann_file`` is
    what the error messages name.
    """
    from pycocotools.coco import COCO

    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in lists):
        raise UserError(f"annotation file {ann_file} is not COCO instances json (expected an object "
                        "with 'images', 'annotations' and 'categories' lists)")
    if not data.get("images"):
        raise UserError(f"annotation file {ann_file} has no images")
    if not data.get("categories"):
        raise UserError(f"annotation file {ann_file} has no categories")
    data.setdefault("annotations", [])
    for key, required in (("images", _IMAGE_KEYS), ("annotations", _ANN_KEYS), ("categories", ("id",))):
        bad = _first_bad(data[key], required)
        if bad is not None:
            raise UserError(f"annotation file {ann_file}: {key}[{bad}] lacks one of {', '.join(required)}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _file_size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def file_name(coco, img_id):
    return coco.imgs[img_id].get("file_name", f"{img_id:012}.jpg")


def present_image_ids(coco, img_dir, ann_file):
    """Sorted image ids whose file exists and is not empty; the rest are skipped with a warning."""
    img_dir = Path(img_dir)
    if not img_dir.is_dir():
        raise UserError(f"image folder {img_dir} not found (images listed in {ann_file})")
    ids = sorted(coco.getImgIds())
    sizes = np.array([_file_size(img_dir / file_name(coco, i)) for i in ids])
    bad = np.flatnonzero(sizes <= 0)
    if len(bad):
        example = img_dir / file_name(coco, ids[bad[0]])
        msg = f"{len(bad)} of {len(ids)} images listed in {ann_file} are missing or empty (e.g. {example})"
        if 2 * len(bad) > len(ids):
            raise UserError(msg)
        logger.warning(f"skipping {msg}")
    return [ids[i] for i in np.flatnonzero(sizes > 0)]


def clean_boxes(coco, img_ids, ann_file):
    """Per image id: (boxes [N, 4] float64 xyxy in image pixels, class index [N] int64 0..K-1).

    Class indices follow the sorted category ids. See the module docstring for the policy.
    """
    return {img_id: (boxes, cls) for img_id, (boxes, cls, _) in
            clean_annotations(coco, img_ids, ann_file).items()}


def clean_annotations(coco, img_ids, ann_file, keep_crowd=False):
    """``clean_boxes`` plus a per-box crowd flag [N] bool: (boxes, class index, crowd) per image.

    ``keep_crowd=True`` keeps crowd boxes (flagged) instead of ignoring them: Pascal VOC's
    "difficult" boxes are indexed as crowd (so COCOeval ignores them, as the VOC devkit does) yet
    are still trained on (upstream YOLOX's ``keep_difficult=True``). Every other rule is the same.
    """
    class_ids = np.asarray(sorted(coco.getCatIds()))
    infos = coco.loadImgs(img_ids)
    try:
        hw = np.array([(im["height"], im["width"]) for im in infos], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise UserError(f"annotation file {ann_file}: image width and height must be numbers") from None
    if not (hw > 0).all():
        bad = img_ids[int(np.argmin((hw > 0).all(axis=1)))]
        raise UserError(f"annotation file {ann_file}: image {bad} needs a positive width and height")
    row = {img_id: i for i, img_id in enumerate(img_ids)}
    anns = [a for a in coco.dataset["annotations"]
            if (keep_crowd or not a.get("iscrowd", 0)) and a["image_id"] in row]
    pos = np.array([row[a["image_id"]] for a in anns], dtype=np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    try:
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4)
        cats = np.array([a["category_id"] for a in anns], dtype=np.int64).reshape(len(anns))
    except (TypeError, ValueError):
        raise UserError(f"annotation file {ann_file}: every bbox must be 4 numbers [x, y, w, h] "
                        "and every category_id an integer") from None
    cls = np.minimum(np.searchsorted(class_ids, cats), len(class_ids) - 1)
    unknown = class_ids[cls] != cats
    if unknown.any():
        raise UserError(f"annotation file {ann_file}: category_id {int(cats[unknown][0])} is not in its "
                        f"categories {class_ids.tolist()}")
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + np.maximum(xywh[:, 2:], 0)], axis=1)
    clipped = np.clip(xyxy, 0, np.tile(hw[pos][:, ::-1], 2))
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    n_clipped = int((keep & (clipped != xyxy).any(axis=1)).sum())
    if (~keep).any() or n_clipped:
        logger.warning(f"{Path(ann_file).name}: clipped {n_clipped} boxes to their image and dropped "
                       f"{int((~keep).sum())} with zero area after clipping (of {len(anns)})")
    boxes, cls, pos, crowd = clipped[keep], cls[keep], pos[keep], crowd[keep]
    order = np.argsort(pos, kind="stable")
    splits = np.cumsum(np.bincount(pos, minlength=len(img_ids)))[:-1]
    per_boxes = np.split(boxes[order], splits)
    per_cls = np.split(cls[order].astype(np.int64), splits)
    per_crowd = np.split(crowd[order], splits)
    return {img_id: (per_boxes[i], per_cls[i], per_crowd[i]) for i, img_id in enumerate(img_ids)}


class UnreadableImages:
    """Counts images that fail to decode: a warning naming each, a UserError once most of the
    ``total`` images of ``folder`` are unreadable (then the data set, not one file, is broken)."""

    def __init__(self, folder, total):
        self.folder, self.total, self.bad = Path(folder), total, set()

    def skip(self, index, path, reason=""):
        self.bad.add(index)
        if 2 * len(self.bad) > self.total:
            raise UserError(f"most images under {self.folder} cannot be decoded "
                            f"({len(self.bad)} of {self.total}, e.g. {path})")
        logger.warning(f"skipping unreadable image {path}{f' ({reason})' if reason else ''} "
                       f"({len(self.bad)} so far)")

    def first_readable(self, index, read):
        """``read(i)`` for the first i from ``index`` on (wrapping) that decodes; ``read`` returns
        the decoded item or raises OSError/ValueError for an unreadable file."""
        for step in range(self.total):
            i = (index + step) % self.total
            if i in self.bad:
                continue
            try:
                return i, read(i)
            except (OSError, ValueError) as exc:
                self.skip(i, exc.filename if getattr(exc, "filename", None) else f"#{i}", str(exc))
        raise UserError(f"no readable image under {self.folder}")


class IndexedSource:
    """What both detectors read a data split through: ``coco`` (a pycocotools index, which the
    COCO evaluation scores against), ``img_dir``, ``ann_file`` (what messages name),
    ``class_ids`` / ``class_names``, the kept ``ids``, cleaned ``boxes`` per id, ``unreadable``.
    ``CocoSource`` reads a json; ``detcore.voc.VocSource`` builds the same from VOC xmls."""

    def path(self, img_id):
        return self.img_dir / file_name(self.coco, img_id)

    def size(self, img_id):
        """(height, width) as listed in the index."""
        info = self.coco.imgs[img_id]
        return int(info["height"]), int(info["width"])


class CocoSource(IndexedSource):
    """One split of a COCO-layout folder: the index, its kept image ids and cleaned boxes."""

    def __init__(self, ann_file, img_dir):
        self.ann_file, self.img_dir = Path(ann_file), Path(img_dir)
        self.coco = load_coco(self.ann_file)
        self.class_ids = sorted(self.coco.getCatIds())
        self.class_names = tuple(c.get("name", str(c["id"])) for c in self.coco.loadCats(self.class_ids))
        self.ids = present_image_ids(self.coco, self.img_dir, self.ann_file)
        self.boxes = clean_boxes(self.coco, self.ids, self.ann_file)
        self.unreadable = UnreadableImages(self.img_dir, len(self.ids))
