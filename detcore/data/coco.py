"""Reading a COCO instances json and its image folder into the shared index.

What is COCO's own here: the json. A malformed or empty json, or a missing folder, is a one-line
UserError naming the file; the instances then go through the one cleaning policy of
``detcore.data.index`` (``BoxTable.clean``) like every other format's.

Memory and time: COCO train's polygons alone are ~2 GB of Python floats, so they are cut out of the
json text before it is parsed (training never reads them), and cyclic garbage collection is
paused while the json is parsed and indexed (``_gc_paused``). The pycocotools index, which only
COCO scoring needs, is built on first use of ``source.coco`` from the json again, whole, in the
process that asks (the evaluator's main process).
"""
import contextlib
import gc
import json
import re
from pathlib import Path

import numpy as np

from accel.errors import UserError
from detcore.data.heap import return_freed_heap
from detcore.data.index import BoxTable, Columns, IndexedSource, check_instances, coco_from_dict

# A polygon "segmentation" value: a list (of lists) of numbers. An RLE one (a dict, crowd boxes)
# does not match and is parsed as usual. Only characters a list of JSON numbers can hold are
# crossed, so the match cannot leave the value (a string, an object or the next key stops it).
_POLYGONS = re.compile(rb'"segmentation"\s*:\s*\[[-+0-9.eE,\s\[\]]*\]')


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection inside: parsing a json and indexing it create millions of
    containers none of which is part of a cycle, yet each allocation burst triggers collections
    that walk every tracked object of the process (torch and torchvision hold ~300k). Measured on
    the 118k-image train json without polygons: 7.9 s to parse with collections, 3.5 s without."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_json(ann_file, polygons=True):
    """The parsed json of ``ann_file``; one-line UserError when it is missing or not JSON.

    ``polygons=False`` replaces every polygon segmentation by ``[]`` in the raw text before
    parsing: the 118k-image COCO train json then parses ~3x faster and never holds its ~60M
    coordinates as Python floats. A syntax error is reported from the untouched text, so its line
    number is the file's.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise UserError(f"annotation file {ann_file} not found (expected COCO instances json)")
    try:
        raw = ann_file.read_bytes()
        if not polygons:
            text = _POLYGONS.sub(b'"segmentation":[]', raw)
            del raw                                  # not held while the shorter text is parsed
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raw = ann_file.read_bytes()          # the error as the file has it, line and all
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"annotation file {ann_file} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"annotation file {ann_file} cannot be read ({exc})") from None


def load_coco(ann_file):
    """Parse and sanity-check an instances json, then build a pycocotools COCO index (quietly).
    What COCO scoring reads; training reads ``CocoSource``'s arrays instead."""
    ann_file = Path(ann_file)
    with _gc_paused():
        return coco_from_dict(read_json(ann_file), ann_file)


def _image_ids(values, ann_file):
    """The listed image ids as int64; a non-integer one is a one-line UserError (ids are looked
    up by binary search in the arrays, and name files as ``{id:012}.jpg`` by default)."""
    ids = np.asarray(values)
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        bad = next((i for i, v in enumerate(values) if not isinstance(v, int) or isinstance(v, bool)), 0)
        raise UserError(f"annotation file {ann_file}: images[{bad}] has id {values[bad]!r}; "
                        "image ids must be integers")
    return ids.astype(np.int64, copy=False)


def columns_of(data, ann_file):
    """The ``Columns`` of an instances dict whose lists ``check_instances`` has checked; an
    entry without a key the checks require is the same one-line UserError."""
    images, anns = data["images"], data["annotations"]
    try:      # the annotation and category ids are read for the check alone (required keys)
        columns = [[im["id"] for im in images], [(im["height"], im["width"]) for im in images],
                   [a["image_id"] for a in anns], [a["category_id"] for a in anns],
                   [a["bbox"] for a in anns], [a.get("iscrowd", 0) for a in anns],
                   [a["id"] for a in anns], [c["id"] for c in data["categories"]]]
    except (KeyError, TypeError, AttributeError, IndexError):
        check_instances(data, ann_file)                  # raises, naming the entry
        raise
    img_ids, hw, ann_img, ann_cat, ann_xywh, crowd = columns[:6]
    flags = np.asarray(crowd)
    crowd = (flags != 0 if flags.ndim == 1 and flags.dtype.kind in "biuf"
             else np.fromiter(map(bool, crowd), dtype=bool, count=len(crowd)))
    return Columns(_image_ids(img_ids, ann_file), hw, [im.get("file_name") for im in images],
                   ann_img, ann_cat, ann_xywh, crowd)


class CocoSource(IndexedSource):
    """One split of a COCO-layout folder: its kept image ids and cleaned boxes as arrays.

    The json is parsed once without its polygons and its dict dropped before the constructor
    returns; ``coco`` reads the file again, whole, when scoring first asks for it.
    """

    def __init__(self, ann_file, img_dir):
        self.ann_file, self.img_dir = Path(ann_file), Path(img_dir)
        with _gc_paused():
            data = check_instances(read_json(self.ann_file, polygons=False), self.ann_file, entries=False)
            columns = columns_of(data, self.ann_file)
            cats = {c["id"]: c for c in data["categories"]}            # an id listed twice: the last
            class_ids = sorted(cats)
            names = [cats[i].get("name", str(i)) for i in class_ids]
            del data
            table = BoxTable.clean(columns, class_ids, self.img_dir, self.ann_file)
            del columns
        self._hold(table, class_ids, names)
        return_freed_heap()

    def _index(self):
        return load_coco(self.ann_file)
