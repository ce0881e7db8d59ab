"""The in-memory index every data format becomes, and the ONE cleaning policy that fills it.

Each reader (``coco``, ``voc``, ``yolo``) turns its files into ``Columns`` (the instances as
listed) and hands them to ``BoxTable.clean``; everything downstream (training sets, evaluation, the
data check, conversion) reads the ``IndexedSource`` built from the result, never the files. Here
because no format owns it: it is what the three share.

The policy, applied once at start-up and vectorised over all annotations:
- a ``category_id`` that the classes do not list: UserError naming the file and the id;
- crowd boxes are ignored (VOC's difficult ones are kept, flagged); every box is clipped to its
  image FIRST, then boxes with zero area after clipping are dropped (a box lying outside its
  image is one of them); both are counted and logged once;
- listed images whose file is missing or empty are skipped with a warning naming one of them;
  images that fail to decode later are skipped the same way (``UnreadableImages``); when most of
  the set is unusable the run stops instead (``skip_or_stop``).

What the policy did is kept as counts (``BoxTable.cleaning``: images skipped, boxes clipped and
dropped, crowd boxes ignored), which ``detcore.data.check.summary_line`` prints at start. Inside
``auditing()`` (``detkit-check-data``) the cleaning also keeps what it read before changing
anything (``BoxTable.audit``, an ``Audit``): the data check reports the raw annotations from the
same reading, not from a second parser.

Memory: a training split is held as a few flat numpy arrays (``BoxTable``), never as one Python
object per image or box. A loader worker forked from the main process shares those pages; had it
touched per-box Python objects (a pycocotools index: dicts, lists, floats), every reference count
it changed would copy the page holding it (upstream YOLOX issues #91, #103, #211).

Scoring: ``source.coco`` is a pycocotools index of a COCO instances dict for every format
(``coco_instances`` builds the dict from arrays, ``coco_from_dict`` checks and indexes it), built
on first use in the process that asks (the evaluator's main process), so COCO scoring reads COCO,
VOC and YOLO data alike.
"""
import abc
import contextlib
import contextvars
import functools
import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import UserError
from detcore.boxes import xyxy2xywh

_IMAGE_KEYS = ("id", "width", "height")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")


def _first_bad(entries, keys):
    """Index of the first entry that is not a dict holding all ``keys`` (None when all are fine)."""
    return next((i for i, e in enumerate(entries)
                 if not isinstance(e, dict) or not all(k in e for k in keys)), None)


def check_instances(data, ann_file, entries=True):
    """The structure every reader relies on: an object with non-empty ``images`` and
    ``categories`` lists (``annotations`` may be absent: then there are none), each entry a dict
    with the keys the cleaning reads. One-line UserError naming ``ann_file`` otherwise.

    ``entries=False`` checks the lists only: ``detcore.data.coco.columns_of`` reads every entry's
    keys anyway and comes back here for the message when one is missing (one pass over 860k
    entries, not two).
    """
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
        bad = _first_bad(data[key], required) if entries else None
        if bad is not None:
            raise UserError(f"annotation file {ann_file}: {key}[{bad}] lacks one of {', '.join(required)}")
    return data


def coco_from_dict(data, ann_file):
    """Sanity-check a COCO instances dict and index it with pycocotools (quietly).

    Every source's scoring index goes through here: a COCO json's dict (``detcore.data.coco.
    load_coco``) and the dicts VOC and YOLO sources build in memory share the checks and the
    index; ``ann_file`` is what the error messages name.
    """
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = check_instances(data, ann_file)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_instances(img_ids, file_names, hw, box_img, box_cat, xyxy, crowd, categories):
    """A COCO instances dict of images and boxes held as arrays: the one spelling of what the
    converter writes as json and what VOC and YOLO sources are scored through (``coco_from_dict``).

    Per image: ``img_ids``, ``file_names``, ``hw`` (height, width; kept as given: ints stay ints);
    per box: ``box_img`` (its image id), ``box_cat`` (category id), ``xyxy`` pixels and ``crowd``
    (-> ``iscrowd``, which both COCOeval implementations turn into ``ignore``); ``categories``:
    (id, name) pairs. Annotation ids are 1..M in box order, ``bbox`` is [x, y, w, h] and
    ``area`` w * h (0 for a negative size, which a box as parsed may have)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    xywh = xyxy2xywh(xyxy)
    area = np.maximum(xywh[:, 2], 0.0) * np.maximum(xywh[:, 3], 0.0)
    images = [{"id": i, "file_name": n, "width": w, "height": h}
              for i, n, (h, w) in zip(np.asarray(img_ids).tolist(), file_names, np.asarray(hw).tolist())]
    anns = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": cr}
            for k, (i, c, b, a, cr) in enumerate(zip(
                np.asarray(box_img).tolist(), np.asarray(box_cat).tolist(), xywh.tolist(), area.tolist(),
                np.asarray(crowd, dtype=bool).astype(int).tolist()))]
    return {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": n} for i, n in categories]}


def _file_size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _pick(column, index):
    """``column[index]`` for a numpy column, the listed items for a Python list (json values)."""
    if isinstance(column, np.ndarray):
        return column[index]
    return [column[i] for i in index.tolist()]


class Columns:
    """One split's instances as listed, before cleaning: what ``BoxTable.clean`` reads.

    Image columns: ``img_ids`` (int64), ``hw`` (height, width) and ``file_names`` per image.
    Annotation columns: ``ann_img`` (image id), ``ann_cat`` (category id), ``ann_xywh`` (bbox),
    ``ann_crowd`` (bool). A column is either a numpy array or a Python list of the json's values,
    which the cleaning converts only where it reads them (as the pycocotools-based reader did:
    a malformed crowd box, or one of an image that is skipped, is not an error).
    """

    def __init__(self, img_ids, hw, file_names, ann_img, ann_cat, ann_xywh, ann_crowd):
        self.img_ids, self.hw, self.file_names = img_ids, hw, file_names
        self.ann_img, self.ann_cat, self.ann_xywh, self.ann_crowd = ann_img, ann_cat, ann_xywh, ann_crowd


_AUDITING = contextvars.ContextVar("detcore_data_auditing", default=False)


@contextlib.contextmanager
def auditing():
    """Inside, every ``BoxTable.clean`` also keeps an ``Audit`` of what it read (the data check's
    way in: it opens data sets through the trainers' own ``open_sources``, which takes no such
    option). Outside, training keeps no copy of the raw boxes (27 MB at COCO train's 860k)."""
    token = _AUDITING.set(True)
    try:
        yield
    finally:
        _AUDITING.reset(token)


class Audit:
    """One split as its annotations list it, before the cleaning clipped, dropped or skipped
    anything: what ``detkit-check-data`` reports (``BoxTable.audit``, inside ``auditing()`` only).

    Images, one per unique listed id (sorted): ``ids``, ``file_names``, ``file_sizes`` (-1: no
    file); ``entries``: image entries as listed (an id listed twice counts twice). Annotations
    read (those of images in the index, crowd ones only where the source keeps them, as VOC's
    difficult): ``row`` (the image's row in the table), ``cls`` (class index), ``xywh`` as listed
    (float64, unclipped, negative sizes kept), ``crowd``. ``orphans``: annotations whose
    image_id no image lists (the cleaning passes over them silently).
    """

    def __init__(self, columns, listed, ann_file, row, cls, xywh, crowd):
        self.ids, _, self.file_names, self.file_sizes = listed
        self.entries = len(columns.img_ids)
        self.orphans = int((_rows_of(columns.ann_img, self.ids, ann_file) < 0).sum())
        self.row, self.cls, self.xywh, self.crowd = row, cls, xywh, crowd


def find_sorted(keys, values):
    """Position of each of ``values`` in the sorted array ``keys``, -1 where it is not there: one
    searchsorted for what a dict lookup per value would give."""
    keys, values = np.asarray(keys), np.asarray(values)
    if keys.size == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return np.where(keys[at] == values, at, -1).astype(np.int64)


def _rows_of(values, ids, ann_file):
    """Row in the sorted int64 ``ids`` of each annotation's image id, -1 where it is not there.
    Integer ids are matched with one searchsorted; any other listed values one by one (a float
    1.0 is image 1, as a dict lookup has it)."""
    vals = values if isinstance(values, np.ndarray) else np.asarray(values)
    if vals.ndim == 1 and vals.dtype.kind in "iu":
        return find_sorted(ids, vals)
    row = dict(zip(ids.tolist(), range(len(ids))))
    try:
        return np.fromiter((row.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    except TypeError:
        raise UserError(f"annotation file {ann_file}: every image_id must be an integer") from None


class BoxTable:
    """The cleaned boxes of one split as a few flat arrays (read-only, shared by forked workers).

    ``ids`` int64 [N] sorted image ids; ``hw`` float64 [N, 2] (height, width) as listed;
    ``first`` int64 [N + 1]: image ``r``'s boxes are rows ``first[r]:first[r + 1]`` of ``boxes``
    float64 [M, 4] (xyxy pixels), ``cls`` int64 [M] (class index 0..K-1) and ``crowd`` bool [M];
    file names are one UTF-8 bytes object cut at ``name_at`` [N + 1].

    ``cleaning`` says what the policy did (ints: ``images_listed``, ``images_skipped`` missing or
    empty, ``boxes_read``, ``crowd_ignored``, ``clipped``, ``dropped``), so a run can say it at
    start without reading the annotations again; ``audit`` is an ``Audit`` inside ``auditing()``,
    else None (training holds no copy of the raw boxes).
    """

    def __init__(self, ids, hw, first, boxes, cls, crowd, names, name_at, cleaning=None, audit=None):
        self.ids, self.hw, self.first = ids, hw, first
        self.boxes, self.cls, self.crowd = boxes, cls, crowd
        self.names, self.name_at = names, name_at
        self.cleaning, self.audit = dict(cleaning or {}), audit
        for a in (ids, hw, first, boxes, cls, crowd, name_at):
            a.flags.writeable = False      # views of these are handed out: nobody may edit them

    def __len__(self):
        return len(self.ids)

    @property
    def counts(self):
        """Boxes per image [N]."""
        return np.diff(self.first)

    def row(self, img_id):
        """Row of image ``img_id``; KeyError when the split does not hold it."""
        r = int(np.searchsorted(self.ids, img_id))
        if r == len(self.ids) or self.ids[r] != img_id:
            raise KeyError(img_id)
        return r

    def at(self, row):
        """(boxes [n, 4], class index [n], crowd [n]) of image ``row`` (read-only views)."""
        s = slice(self.first[row], self.first[row + 1])
        return self.boxes[s], self.cls[s], self.crowd[s]

    def size_at(self, row):
        """(height, width) of image ``row`` as ints (as listed, truncated)."""
        h, w = self.hw[row]
        return int(h), int(w)

    def file_name_at(self, row):
        return self.names[self.name_at[row]:self.name_at[row + 1]].decode("utf-8")

    @classmethod
    def clean(cls, columns, class_ids, img_dir, ann_file, keep_crowd=False):
        """Apply the policy (module docstring) to ``columns``; class indices follow the sorted
        ``class_ids``. ``keep_crowd=True`` keeps crowd boxes (flagged) instead of ignoring them:
        Pascal VOC's "difficult" boxes are indexed as crowd (so COCOeval ignores them, as the VOC
        devkit does) yet are still trained on (upstream YOLOX's ``keep_difficult=True``)."""
        listed = _listed_files(columns, img_dir, ann_file)
        ids, rows, names = _present_images(listed, img_dir, ann_file)
        try:
            hw = np.array(_pick(columns.hw, rows), dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise UserError(f"annotation file {ann_file}: image width and height must be numbers") from None
        if not (hw > 0).all():
            bad = ids[int(np.argmin((hw > 0).all(axis=1)))]
            raise UserError(f"annotation file {ann_file}: image {bad} needs a positive width and height")
        all_pos = pos = _rows_of(columns.ann_img, ids, ann_file)
        all_crowd = crowd = np.asarray(columns.ann_crowd, dtype=bool).reshape(-1)
        take = np.flatnonzero((pos >= 0) & (keep_crowd | ~crowd))
        pos, crowd = pos[take].astype(np.int64), crowd[take]
        try:
            xywh = np.array(_pick(columns.ann_xywh, take), dtype=np.float64).reshape(len(take), 4)
            cats = np.array(_pick(columns.ann_cat, take), dtype=np.int64).reshape(len(take))
        except (TypeError, ValueError):
            raise UserError(f"annotation file {ann_file}: every bbox must be 4 numbers [x, y, w, h] "
                            "and every category_id an integer") from None
        class_ids = np.asarray(class_ids, dtype=np.int64)
        index = find_sorted(class_ids, cats)
        unknown = index < 0
        if unknown.any():
            raise UserError(f"annotation file {ann_file}: category_id {int(cats[unknown][0])} is not in its "
                            f"categories {class_ids.tolist()}")
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + np.maximum(xywh[:, 2:], 0)], axis=1)
        clipped = np.clip(xyxy, 0, np.tile(hw[pos][:, ::-1], 2))
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        n_clipped = int((keep & (clipped != xyxy).any(axis=1)).sum())
        if (~keep).any() or n_clipped:
            logger.warning(f"{Path(ann_file).name}: clipped {n_clipped} boxes to their image and dropped "
                           f"{int((~keep).sum())} with zero area after clipping (of {len(take)})")
        n_crowd = 0 if keep_crowd else int(((all_pos >= 0) & all_crowd).sum())
        cleaning = {"images_listed": len(listed[0]), "images_skipped": len(listed[0]) - len(ids),
                    "boxes_read": len(take), "crowd_ignored": n_crowd, "clipped": n_clipped,
                    "dropped": int((~keep).sum())}
        audit = Audit(columns, listed, ann_file, pos, index, xywh, crowd) if _AUDITING.get() else None
        pos = pos[keep]
        order = np.argsort(pos, kind="stable")          # per image, in the json's order
        first = np.concatenate([[0], np.cumsum(np.bincount(pos, minlength=len(ids)))]).astype(np.int64)
        encoded = [n.encode("utf-8") for n in names]
        name_at = np.concatenate([[0], np.cumsum([len(n) for n in encoded], dtype=np.int64)]).astype(np.int64)
        return cls(ids, hw, first, np.ascontiguousarray(clipped[keep][order]), index[keep][order],
                   crowd[keep][order], b"".join(encoded), name_at, cleaning, audit)


def _listed_files(columns, img_dir, ann_file):
    """(sorted unique listed image ids, their rows in the columns, their file names, their file
    sizes: -1 where there is no file). An id listed twice is the last listing, as pycocotools'
    index has it."""
    img_dir = Path(img_dir)
    if not img_dir.is_dir():
        raise UserError(f"image folder {img_dir} not found (images listed in {ann_file})")
    listed = columns.img_ids
    order = np.argsort(listed, kind="stable")
    last = np.ones(len(order), dtype=bool)
    last[:-1] = listed[order][1:] != listed[order][:-1]
    rows = order[last]
    ids = listed[rows]
    names = [n if n is not None else f"{i:012}.jpg"
             for n, i in zip(_pick(columns.file_names, rows), ids.tolist())]
    folder = str(img_dir)                     # os.path.join: a Path per image costs more than its stat
    sizes = np.fromiter((_file_size(os.path.join(folder, n)) for n in names), dtype=np.int64, count=len(names))
    return ids, rows, names, sizes


def skip_or_stop(msg, bad, total):
    """The data sets' one policy for files that cannot be used: when they are more than half of
    ``total`` the data is wrong as a whole (one line, ``UserError``), else they are skipped with a
    warning saying how many."""
    if 2 * bad > total:
        raise UserError(msg)
    logger.warning(f"skipping {msg}")


def _present_images(listed, img_dir, ann_file):
    """(image ids whose file exists and is not empty, their rows in the columns, their file
    names) of ``_listed_files``' answer; the rest are skipped with a warning."""
    img_dir = Path(img_dir)
    ids, rows, names, sizes = listed
    bad = np.flatnonzero(sizes <= 0)
    if len(bad):
        skip_or_stop(f"{len(bad)} of {len(ids)} images listed in {ann_file} are missing or empty "
                     f"(e.g. {img_dir / names[bad[0]]})", len(bad), len(ids))
    good = np.flatnonzero(sizes > 0)
    return ids[good], rows[good], [names[i] for i in good.tolist()]


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
                named = getattr(exc, "filename", None)      # then the reason is the bare strerror
                reason = str(getattr(exc, "strerror", None) or exc) if named else str(exc)
                self.skip(i, named or f"#{i}", reason)
        raise UserError(f"no readable image under {self.folder}")


class PerImage(Mapping):
    """Image id -> ``pick(row)``, computed on access from a ``BoxTable`` (no stored object per
    image): ``source.boxes[img_id]`` and the like keep their dict-style reading."""

    def __init__(self, table, pick):
        self.table, self.pick = table, pick

    def __getitem__(self, img_id):
        return self.pick(self.table.row(img_id))

    def __iter__(self):
        return iter(self.table.ids.tolist())

    def __len__(self):
        return len(self.table)


class IndexedSource(abc.ABC):
    """What both detectors read a data split through: ``img_dir``, ``ann_file`` (what messages
    name), ``class_ids`` / ``class_names``, the kept ``ids`` (sorted), their cleaned boxes as one
    ``table`` (``BoxTable``; ``boxes[img_id]`` -> (boxes, class index) reads it), ``unreadable``,
    and ``coco``: a pycocotools index for COCO scoring, built on first use and then kept.
    ``CocoSource`` reads a json; ``detcore.data.voc.VocSource`` builds the same from VOC xmls."""

    def _hold(self, table, class_ids, class_names):
        self.table, self.class_ids, self.class_names = table, list(class_ids), tuple(class_names)
        self.ids = table.ids.tolist()
        self.unreadable = UnreadableImages(self.img_dir, len(self.ids))

    @property
    def boxes(self):
        """Image id -> (boxes [N, 4] float64 xyxy pixels, class index [N] int64), read-only."""
        return PerImage(self.table, lambda r: self.table.at(r)[:2])

    def file_name(self, img_id):
        """The image's file, relative to ``img_dir``."""
        return self.table.file_name_at(self.table.row(img_id))

    def path(self, img_id):
        return self.img_dir / self.file_name(img_id)

    def size(self, img_id):
        """(height, width) as listed."""
        return self.table.size_at(self.table.row(img_id))

    @functools.cached_property
    def coco(self):
        """The pycocotools index of this split (what COCO scoring reads), built on first use."""
        return self._index()

    @abc.abstractmethod
    def _index(self):
        """Build the pycocotools index from the split's files."""
