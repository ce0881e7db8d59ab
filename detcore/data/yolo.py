"""Reading an Ultralytics YOLO data set (``data.yaml`` + images + ``labels/*.txt``) with the same
interface and cleaning policy as COCO and VOC.

Why a reader of its own and not a conversion to a COCO json first: the design keeps ONE in-memory
index per split (``detcore.data.index.BoxTable``) that every format becomes; converting through a file
would add a second copy on disk that goes stale when the labels change.

The yaml (Ultralytics' keys):

- ``path``: the data set root; relative to the yaml's folder (Ultralytics resolves a relative
  ``path`` against its own settings' datasets folder, which detkit has not: the yaml's folder is
  what a data set that travels as one folder means). Absent: the yaml's folder.
- ``train``, ``val``, optional ``test``: each a folder of images (searched recursively for
  ``detcore.data.images.IMAGE_SUFFIXES``, Ultralytics' list), a ``.txt`` list of image paths
  (one a line; relative lines are relative to the list's folder), or a list of those; relative
  to ``path``. As Ultralytics, a relative entry starting with ``../``
  that does not exist under ``path`` is tried without its ``../`` (Roboflow's exports).
- ``names``: a list of class names, or an ``{id: name}`` map whose ids are 0..K-1; optional
  ``nc`` must equal K.

Labels are found by Ultralytics' rule: the last ``/images/`` of the image path becomes
``/labels/`` and the suffix becomes ``.txt``. A line is ``class cx cy w h`` normalised to [0, 1]
(or ``class x1 y1 x2 y2 ...``: a polygon, whose bounding box is used, as Ultralytics does).

The cleaning policy (``detcore.data.index``'s module docstring), as it applies here:

- a malformed line or a class id outside ``names``: stop, one line naming the file and line;
- coordinates outside [0, 1] by more than ``TOLERANCE``: the boxes are clipped to the image by the
  shared cleaning and counted; one warning names the first file and line; when most boxes of the
  split are out of range (pixel coordinates, not normalised ones) the run stops instead;
- no label file or an empty one: a background image, kept (no objects, a negative example);
- a label file without an image (in a folder split): skipped, one warning naming one of them;
- a listed image that is missing or empty: skipped with a warning, stop when most are (the
  shared ``BoxTable.clean``); one whose header cannot be read: the same.

Image ids are the 0-based positions of the sorted image paths (Ultralytics sorts them too); class
ids are 0..K-1 in ``names`` order. The pycocotools index (``.coco``, first use) is built from the
cleaned table, so COCO scoring sees exactly the boxes training sees.
"""
import os
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import UserError
from detcore.data.images import IMAGE_SUFFIXES, header_size, images_under, is_image
from detcore.data.index import BoxTable, Columns, IndexedSource, coco_from_dict, coco_instances, skip_or_stop
from detcore.boxes import cxcywh2xyxy, xyxy2xywh

SPLITS = ("train", "val", "test")
# normalised coordinates this far outside [0, 1] are rounding, not a mistake: clipped silently
TOLERANCE = 0.01


def _yaml_lines(text):
    """Top-level key -> 1-based line of the yaml ``text`` (for messages that name a line);
    empty when the text cannot be composed (the parse error is reported instead)."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


class DataYaml:
    """A parsed ``data.yaml``: ``file``, ``root`` (resolved ``path``), ``names`` (tuple),
    ``splits`` (split -> list of entries as written) and ``lines`` (key -> line, for messages)."""

    def __init__(self, file):
        import yaml

        self.file = Path(file)
        try:
            text = self.file.read_text()
        except FileNotFoundError:
            raise UserError(f"data yaml {self.file} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"data yaml {self.file} cannot be read ({exc})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UserError(f"data yaml {self.file}{where}: not valid YAML ({problem})") from None
        if not isinstance(data, dict):
            raise UserError(f"data yaml {self.file}: expected a mapping with path, train, val and names")
        self.lines = _yaml_lines(text)
        self.names = self._names(data)
        root = data.get("path")
        self.root = self.file.parent if not root else Path(str(root)).expanduser()
        if not self.root.is_absolute():
            self.root = self.file.parent / self.root
        self.splits = {}
        for split in SPLITS:
            value = data.get(split)
            if value in (None, ""):
                continue
            entries = value if isinstance(value, list) else [value]
            if not entries or not all(isinstance(e, (str, Path)) for e in entries):
                raise UserError(f"{self.where(split)}: {split} must be a folder, a .txt list of images "
                                f"or a list of those (got {value!r})")
            self.splits[split] = [str(e) for e in entries]

    def where(self, key):
        """``data yaml FILE line N`` for top-level ``key`` (the file alone when it is absent)."""
        line = self.lines.get(key)
        return f"data yaml {self.file}" + (f" line {line}" if line else "")

    def _names(self, data):
        names = data.get("names")
        if names is None:
            raise UserError(f"data yaml {self.file}: no 'names' (a list of class names, or an "
                            "{id: name} map with ids 0..K-1)")
        if isinstance(names, dict):
            try:
                ids = sorted(int(k) for k in names)
            except (TypeError, ValueError):
                raise UserError(f"{self.where('names')}: names map keys must be class ids 0..K-1") from None
            if ids != list(range(len(ids))):
                raise UserError(f"{self.where('names')}: names map keys must be 0..{len(ids) - 1} "
                                f"(got {ids})")
            names = [names[k] if k in names else names[str(k)] for k in ids]
        if not isinstance(names, list) or not names:
            raise UserError(f"{self.where('names')}: names must be a non-empty list or {{id: name}} map")
        names = tuple(str(n) for n in names)
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise UserError(f"{self.where('names')}: class name {dup!r} is listed twice")
        nc = data.get("nc")
        if nc is not None and nc != len(names):
            raise UserError(f"{self.where('nc')}: nc {nc} but names lists {len(names)} classes")
        return names

    def split_entries(self, split):
        """The resolved folders / list files of ``split``; one line when one is missing."""
        if split not in self.splits:
            raise UserError(f"data yaml {self.file}: no '{split}' split (expected {split}: a folder "
                            "of images, a .txt list of images or a list of those)")
        resolved = []
        for entry in self.splits[split]:
            path = Path(entry).expanduser()
            if not path.is_absolute():
                path = self.root / entry
                if not path.exists() and entry.startswith("../"):
                    path = self.root / entry[3:]          # Ultralytics' fallback (Roboflow layouts)
            if not path.exists():
                raise UserError(f"{self.where(split)}: {split} entry {entry!r} not found "
                                f"(looked for {path})")
            resolved.append(path)
        return resolved


def label_path(image_path):
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix
    ``.txt`` (an image outside any ``images`` folder has its labels beside it)."""
    text = str(image_path)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        text = sb.join(text.rsplit(sa, 1))
    return Path(os.path.splitext(text)[0] + ".txt")


def list_images(entries):
    """(sorted unique image paths as strings, folders among the entries) of a split's entries."""
    images, folders = [], []
    for path in entries:
        if path.is_dir():
            folders.append(path)
            images += [str(p) for p in images_under(path)]
        elif path.suffix.lower() == ".txt":
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"image list {path} cannot be read ({exc})") from None
            for ln in lines:
                ln = ln.strip()
                if ln:
                    p = Path(ln).expanduser()
                    images.append(str(p if p.is_absolute() else path.parent / p))
        elif is_image(path):
            images.append(str(path))
        else:
            raise UserError(f"{path} is neither a folder of images, a .txt list of images nor an image")
    return sorted(set(os.path.normpath(p) for p in images)), folders


def _bad_line(label_file, lineno, text, why):
    return UserError(f"label file {label_file} line {lineno}: {why} (got {text.strip()[:60]!r})")


def parse_label_file(label_file, num_classes):
    """One label file -> (class [n] int64, xyxy [n, 4] float64 normalised, line numbers [n]).
    A missing file is an image without objects; one-line UserError naming the file and line for
    a malformed line or a class id outside 0..num_classes-1.

    The common file (every line ``class cx cy w h``) is converted and checked as one array; only
    a file with a polygon line, or one that fails, is read line by line (to convert the polygon,
    or to name the bad line)."""
    try:
        text = label_file.read_text()
    except FileNotFoundError:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"label file {label_file} cannot be read ({exc})") from None
    numbered = [(k + 1, ln.split()) for k, ln in enumerate(text.splitlines()) if ln.strip()]
    lineno = np.asarray([n for n, _ in numbered], np.int64)
    if not numbered:
        return np.zeros(0, np.int64), np.zeros((0, 4)), lineno
    values = None
    if all(len(parts) == 5 for _, parts in numbered):
        try:
            values = np.array([parts for _, parts in numbered], dtype=np.float64)
        except ValueError:
            values = None                      # the line by line pass names the bad line
    if values is None or not np.isfinite(values).all():
        values = _parse_lines(label_file, numbered, text)
    c = values[:, 0]
    bad = (c != np.floor(c)) | (c < 0) | (c >= num_classes)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _bad_line(label_file, int(lineno[k]), text.splitlines()[lineno[k] - 1],
                        f"class id {numbered[k][1][0]} is not one of 0..{num_classes - 1} "
                        f"(the {num_classes} names of the data yaml)")
    xyxy = cxcywh2xyxy(values[:, 1:5])
    return c.astype(np.int64), xyxy, lineno


def _parse_lines(label_file, numbered, text):
    """The slow path of ``parse_label_file``: rows [n, 5] (class cx cy w h; a polygon line as its
    bounding box), or the UserError naming the first bad line."""
    lines = text.splitlines()
    rows = []
    for lineno, parts in numbered:
        ln = lines[lineno - 1]
        if len(parts) != 5 and (len(parts) < 7 or len(parts) % 2 == 0):
            raise _bad_line(label_file, lineno, ln, "expected 'class cx cy w h' (5 numbers) or "
                            "'class x1 y1 x2 y2 x3 y3 ...' (a polygon)")
        try:
            v = np.asarray(parts, dtype=np.float64)
        except ValueError:
            raise _bad_line(label_file, lineno, ln, "not numbers") from None
        if not np.isfinite(v).all():
            raise _bad_line(label_file, lineno, ln, "not finite numbers")
        if len(parts) != 5:                    # polygon -> its bounding box as cx cy w h
            pts = v[1:].reshape(-1, 2)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            v = np.array([v[0], *(lo + hi) / 2, *(hi - lo)])
        rows.append(v)
    return np.asarray(rows, np.float64).reshape(-1, 5)


class YoloSource(IndexedSource):
    """One split of a YOLO data set: the attributes of ``CocoSource`` (``coco``, ``class_ids``,
    ``class_names``, ``ids``, ``table``, ``boxes``, ``unreadable``, ``img_dir``, ``ann_file``,
    ``path()``, ``size()``) plus ``data`` (the ``DataYaml``), ``label_files`` [N] (the label file
    of each kept image, str) and ``orphan_labels`` (label files without an image).

    ``class_names`` (e.g. a checkpoint's) must equal the yaml's names when given: YOLO labels are
    indices into ``names``, so other names would silently mean other classes.
    """

    def __init__(self, yaml_file, split, class_names=None):
        self.data = DataYaml(yaml_file)
        self.ann_file = self.data.file                 # what the shared cleaning messages name
        self.split = split
        names = self.data.names
        if class_names is not None and tuple(class_names) != names:
            raise UserError(f"{self.data.where('names')}: names {list(names)} differ from the expected "
                            f"classes {list(class_names)}")
        entries = self.data.split_entries(split)
        images, folders = list_images(entries)
        if not images:
            raise UserError(f"{self.data.where(split)}: no images found for {split} in "
                            f"{', '.join(map(str, entries))} (image suffixes: {', '.join(IMAGE_SUFFIXES)})")
        self.img_dir = Path(os.path.commonpath([os.path.dirname(p) for p in images]))
        labels = [label_path(p) for p in images]
        self.orphan_labels = self._orphans(folders, labels)
        columns, label_of = self._columns(images, labels, len(names))
        table = BoxTable.clean(columns, range(len(names)), self.img_dir, self.ann_file)
        self.label_files = [label_of[i] for i in table.ids.tolist()]
        self._hold(table, range(len(names)), names)

    def _orphans(self, folders, labels):
        """Label files under the label folders of folder splits that belong to no image: skipped,
        one warning naming one (a label file of a list split may belong to another split)."""
        expected = set(map(str, labels))
        orphans = []
        for folder in folders:
            label_dir = label_path(folder / "x.jpg").parent
            if label_dir.is_dir():
                orphans += sorted(str(p) for p in label_dir.rglob("*.txt")
                                  if str(p) not in expected and p.name != "classes.txt")
        if orphans:
            logger.warning(f"{self.data.file}: skipping {len(orphans)} label files of {self.split} "
                           f"without an image (e.g. {orphans[0]})")
        return orphans

    def _columns(self, images, labels, num_classes):
        """The split as ``Columns`` in pixels for ``BoxTable.clean``, and image id -> label file."""
        sizes = [header_size(p) for p in images]
        unreadable = [p for p, s in zip(images, sizes) if s is None and os.path.isfile(p)
                      and os.path.getsize(p) > 0]
        if unreadable:
            skip_or_stop(f"{len(unreadable)} of {len(images)} {self.split} images of {self.data.file} "
                         f"cannot be read (e.g. {unreadable[0]})", len(unreadable), len(images))
        keep = [i for i, s in enumerate(sizes) if s is not None or _no_file(images[i])]
        cls, boxes, owner, where = [], [], [], []
        for i in keep:
            c, b, lines = parse_label_file(labels[i], num_classes)
            cls.append(c)
            boxes.append(b)
            owner.append(np.full(len(c), i, np.int64))
            where.append((i, lines))
        cls = np.concatenate(cls) if cls else np.zeros(0, np.int64)
        norm = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        owner = np.concatenate(owner) if owner else np.zeros(0, np.int64)
        far = self._check_range(norm, owner, where, labels)
        # within TOLERANCE: rounding of a box at the border, clipped here without a word; boxes
        # further out stay as written, for the cleaning to clip and count
        norm = np.where(far[:, None], norm, np.clip(norm, 0.0, 1.0))
        wh = np.array([s if s is not None else (0, 0) for s in sizes], np.float64).reshape(-1, 2)
        pixels = norm * np.tile(wh[owner], 2)
        xywh = xyxy2xywh(pixels)
        ids = np.asarray(keep, np.int64)
        rel = [os.path.relpath(images[i], self.img_dir) for i in keep]
        columns = Columns(ids, wh[ids][:, ::-1], rel, owner, cls, xywh, np.zeros(len(cls), bool))
        return columns, {i: str(labels[i]) for i in keep}

    def _check_range(self, norm, owner, where, labels):
        """Boxes outside [0, 1] by more than TOLERANCE: one warning naming the first file and line
        (the cleaning clips and counts them); a UserError when most boxes are (pixel labels).
        Returns the flag of each box."""
        bad = ((norm < -TOLERANCE) | (norm > 1 + TOLERANCE)).any(axis=1)
        if not bad.any():
            return bad
        first = int(np.flatnonzero(bad)[0])
        img = int(owner[first])
        lines = dict(where)[img]
        k = first - int(np.flatnonzero(owner == img)[0])
        msg = (f"{int(bad.sum())} of {len(norm)} boxes of {self.split} in {self.data.file} have coordinates "
               f"outside [0, 1] (e.g. label file {labels[img]} line {int(lines[k])})")
        if 2 * int(bad.sum()) > len(norm):
            raise UserError(f"{msg}: YOLO labels are 'class cx cy w h' normalised by the image size")
        logger.warning(f"{msg}: clipped to the image")
        return bad

    def _index(self):
        """pycocotools index of the cleaned table: every kept image (background ones too), boxes
        as xywh pixels, category ids 0..K-1."""
        t = self.table
        instances = coco_instances(t.ids, [t.file_name_at(r) for r in range(len(t))], t.hw,
                                   box_img=np.repeat(t.ids, t.counts), box_cat=t.cls, xyxy=t.boxes,
                                   crowd=t.crowd, categories=enumerate(self.class_names))
        return coco_from_dict(instances, self.ann_file)


def _no_file(path):
    """True when ``path`` has no usable file (missing or empty): it stays listed so the shared
    cleaning skips and counts it (and stops when most are)."""
    return not os.path.isfile(path) or os.path.getsize(path) == 0
