"""Reading a MOTChallenge tracking data set (MOT16/17/20, DanceTrack and the like) as detection
data, with the same interface and cleaning policy as COCO, VOC and YOLO.

Why a reader and not a conversion first: the ONE in-memory index per split
(``detcore.data.index.BoxTable``) is what both detectors train and evaluate on; a tracking set
becomes that index as it lies on disk, and keeps its track identities beside it.

A sequence is a folder ``SEQ/`` holding ``seqinfo.ini`` (``[Sequence]`` name, imDir, frameRate,
seqLength, imWidth, imHeight, imExt), the frames ``SEQ/img1/000001.jpg ...`` and
``SEQ/gt/gt.txt``, one CSV line per box: ``frame, id, x, y, w, h, consider, class, visibility``
(frames 1-based, the box in pixels; 6 to 10 columns: absent ones are consider 1, class 1,
visibility 1, and a class or visibility of -1, as 2D MOT 2015 writes, reads as 1).

Splits of a root (``mot_split``):

- a root with ``train/``, ``val/``, ``test/`` folders of sequences (MOT17, MOT20, DanceTrack):
  each split is its folder; when there is no ``val/`` (MOT17, MOT20), train is the FIRST half of
  the frames of every train sequence and val the SECOND half (the "half" protocol of CenterTrack
  and ByteTrack, how MOT detectors are validated), so give a ``val/`` folder to train on every frame;
- a folder of sequences (``--data`` pointing at ``SEQ``s directly): train the first half and val
  the second half of every sequence, likewise; it has no test split.

MOT17 ships every sequence three times (``-DPM``, ``-FRCNN``, ``-SDP``: the same frames and
ground truth, three public detection files); one copy is read (FRCNN, as ByteTrack does), said
once. A test sequence without ``gt/gt.txt`` (MOTChallenge's are withheld) is one error line.

Classes. ``[Classes]`` in ``seqinfo.ini`` (``1 = circle``, ``2 = rectangle``: class column value
= name; ``detcore.data.writers`` writes it) names the object classes; all sequences of a split
that have one must agree. Without it, MOTChallenge's convention: one class, 1 ``pedestrian``.
Each row then is, in this order:

- an IGNORE region (COCO ``iscrowd``: evaluation ignores detections on it, training does not see
  it) when its class is an object class and ``consider`` is 0 or its visibility is below
  ``min_visibility`` (default 0: none), or when its class is one of MOT17's distractors (2 person
  on a vehicle, 7 static person, 8 distractor, 12 reflection; 13 crowd in MOT20) and class 1 is an
  object class (then as a class-1 ignore region, as the MOTChallenge evaluation matches
  distractors against pedestrians);
- a box of its class, when its class is an object class;
- left out otherwise (MOT17's vehicles 3-6 and occluders 9-11: not objects, not ignore regions,
  as the MOTChallenge evaluation drops them), counted in one line.

Image ids are unique across the sequences of a split folder: ``number * FRAME_STRIDE + frame``
(``number`` the sequence's 1-based position among the folder's sorted sequences), so image
2000017 is frame 17 of the second sequence; file names are ``SEQ/img1/000017.jpg`` relative to
the split folder (``img_dir``). Image sizes come from ``seqinfo.ini`` (checked against the first
frame's header). Track identities are kept on the source: ``track_ids`` aligned with the table's
boxes, ``ignore`` (the ignore regions, cleaned the same way), ``sequences``.

Bad input, one line naming the file (and line): a malformed gt line, a gt frame without its image,
a ``seqinfo.ini`` that lacks a key or disagrees with the frames (seqLength vs the number of
images, imWidth/imHeight vs the first frame).
"""
import configparser
import os
import re
from collections import namedtuple
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import UserError
from detcore.data.images import header_size
from detcore.data.index import BoxTable, Columns, IndexedSource, coco_from_dict, coco_instances, find_sorted
from detcore.data.writers import mot_frame_name

SPLIT_FOLDERS = ("train", "val", "test")
FRAME_STRIDE = 1_000_000            # image id = sequence number * FRAME_STRIDE + frame
PEDESTRIAN = 1
DEFAULT_CLASSES = {PEDESTRIAN: "pedestrian"}
DISTRACTORS = (2, 7, 8, 12, 13)     # MOT17/MOT20 classes the evaluation treats as ignore regions
MOT17_COPIES = ("FRCNN", "SDP", "DPM")   # preference order among MOT17's three copies of a sequence
_COPY = re.compile(r"(.+)-(DPM|FRCNN|SDP)$")
GT_FORMAT = "frame, id, x, y, w, h[, consider, class, visibility]"
_KEYS = ("seqLength", "imWidth", "imHeight")

Sequence = namedtuple("Sequence", "name folder number frame_rate length width height ext im_dir classes")
Sequence.__doc__ = ("One sequence: ``name`` (its folder's name), ``folder``, ``number`` (1-based, the image "
                    "id's high part), ``frame_rate``, ``length`` (frames), ``width``, ``height``, ``ext`` "
                    "(e.g. '.jpg'), ``im_dir`` (e.g. 'img1'), ``classes`` ({class value: name} or None).")
Ignore = namedtuple("Ignore", "img boxes cls track_ids")
Ignore.__doc__ = ("The ignore regions of a split after cleaning: ``img`` image ids [R], ``boxes`` xyxy [R, 4], "
                  "``cls`` class index [R], ``track_ids`` [R].")


def is_sequence(folder):
    """True when ``folder`` is a MOT sequence (``seqinfo.ini`` and ``img1/``)."""
    folder = Path(folder)
    return (folder / "seqinfo.ini").is_file() and (folder / "img1").is_dir()


def sequences_in(folder):
    """The sequence folders directly under ``folder``, sorted (empty when it is not a folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and is_sequence(p))


def is_mot_root(path):
    """True when ``path`` holds sequences directly or in ``train/``, ``val/`` or ``test/``."""
    path = Path(path)
    return bool(sequences_in(path)) or any(sequences_in(path / s) for s in SPLIT_FOLDERS)


def mot_split(root, split, flag="--data"):
    """(folder of sequences, part) of ``split`` of a MOT root: part 'all', 'first' (first half of
    each sequence's frames) or 'second' (module docstring)."""
    root = Path(root)
    have = [s for s in SPLIT_FOLDERS if sequences_in(root / s)]
    if not have:
        if not sequences_in(root):
            raise UserError(f"{flag}: {root} holds no MOT sequences (folders with seqinfo.ini and img1/)")
        if split == "test":
            raise UserError(f"{flag}: MOT data {root} is a folder of sequences: it has train (first halves) "
                            "and val (second halves), no test split")
        return root, "first" if split == "train" else "second"
    if split in have and not (split == "train" and "val" not in have):
        return root / split, "all"
    if split in ("train", "val") and "train" in have:
        return root / "train", "first" if split == "train" else "second"
    raise UserError(f"{flag}: MOT data {root} has no {split}/ folder of sequences (it has {', '.join(have)})")


def part_frames(length, part):
    """(first, last) 1-based frame of a ``length``-frame sequence that ``part`` of ``mot_split``
    holds: all, the first half (rounded up: a 1-frame sequence is train's) or the second half."""
    half = (length + 1) // 2
    return {"all": (1, length), "first": (1, half), "second": (half + 1, length)}[part]


def available_splits(root):
    """The splits ``mot_split`` can open at ``root`` (test only where a ``test/`` folder is)."""
    root = Path(root)
    have = [s for s in SPLIT_FOLDERS if sequences_in(root / s)]
    if not have:
        return ["train", "val"]
    return [s for s in SPLIT_FOLDERS if s in have or (s == "val" and "train" in have)]


def _int_key(ini, section, key, path):
    try:
        return int(float(section[key]))
    except KeyError:
        raise UserError(f"{path}: [Sequence] has no {key}") from None
    except ValueError:
        raise UserError(f"{path}: [Sequence] {key} must be a number (got {section[key]!r})") from None


def read_seqinfo(folder, number=0):
    """The ``Sequence`` of ``folder`` from its ``seqinfo.ini`` (one line naming the file when a
    key is missing or not a number)."""
    folder = Path(folder)
    path = folder / "seqinfo.ini"
    ini = configparser.ConfigParser(interpolation=None)
    ini.optionxform = str
    try:
        ini.read_string(path.read_text())
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise UserError(f"{path} cannot be read ({str(exc).splitlines()[0]})") from None
    if not ini.has_section("Sequence"):
        raise UserError(f"{path}: no [Sequence] section (name, imDir, frameRate, seqLength, imWidth, "
                        "imHeight, imExt)")
    sec = ini["Sequence"]
    length, width, height = (_int_key(ini, sec, k, path) for k in _KEYS)
    if length < 1 or width < 1 or height < 1 or length >= FRAME_STRIDE:
        raise UserError(f"{path}: seqLength, imWidth and imHeight must be positive (seqLength below "
                        f"{FRAME_STRIDE})")
    rate = _number(sec.get("frameRate", ""))
    ext = sec.get("imExt", ".jpg").strip() or ".jpg"
    ext = ext if ext.startswith(".") else "." + ext
    classes = None
    if ini.has_section("Classes"):
        try:
            classes = {int(k): v.strip() for k, v in ini["Classes"].items()}
        except ValueError:
            raise UserError(f"{path}: [Classes] keys must be class numbers (e.g. 1 = pedestrian)") from None
        if not classes:
            raise UserError(f"{path}: [Classes] is empty")
    return Sequence(folder.name, folder, number, rate, length, width, height, ext,
                    sec.get("imDir", "img1").strip() or "img1", classes)


def _number(text):
    """``float(text)``, 0.0 when it is not a number (frameRate is informative only)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def check_frames(seq):
    """The frames' file names of ``seq`` (``SEQ/img1/000001.jpg`` relative to its parent), after
    checking ``seqinfo.ini`` against them: seqLength = the number of ``imExt`` images in imDir,
    imWidth/imHeight = the first frame's size."""
    ini = seq.folder / "seqinfo.ini"
    im_dir = seq.folder / seq.im_dir
    if not im_dir.is_dir():
        raise UserError(f"{ini}: imDir {seq.im_dir}/ not found in {seq.folder}")
    count = sum(1 for n in os.listdir(im_dir) if n.lower().endswith(seq.ext.lower()))
    if count != seq.length:
        raise UserError(f"{ini}: seqLength {seq.length} but {im_dir} holds {count} {seq.ext} images")
    first = im_dir / mot_frame_name(1, seq.ext)
    size = header_size(first)
    if size is None:
        raise UserError(f"{ini}: its first frame {first} is missing or unreadable")
    if tuple(size) != (seq.width, seq.height):
        raise UserError(f"{ini}: imWidth x imHeight {seq.width}x{seq.height} but the first frame {first} "
                        f"is {size[0]}x{size[1]}")
    return [f"{seq.name}/{seq.im_dir}/{mot_frame_name(f, seq.ext)}" for f in range(1, seq.length + 1)]


def _bad_gt(path, lineno, text, why):
    return UserError(f"gt file {path} line {lineno}: {why}, expected '{GT_FORMAT}' (got {text.strip()[:60]!r})")


def parse_gt(path):
    """``gt/gt.txt`` -> (rows [n, 9] float64: frame, id, x, y, w, h, consider, class, visibility
    with the defaults filled in, line numbers [n]). One line naming the file and line for a
    malformed line."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"gt file {path} not found (a sequence without ground truth, as MOTChallenge's "
                        "test sequences, cannot be trained or evaluated on)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"gt file {path} cannot be read ({exc})") from None
    lines = text.splitlines()
    numbered = [(k + 1, ln.split(",")) for k, ln in enumerate(lines) if ln.strip()]
    lineno = np.asarray([n for n, _ in numbered], np.int64)
    rows = np.zeros((len(numbered), 9))
    rows[:, 6:] = 1.0
    widths = {len(parts) for _, parts in numbered}
    values = None
    if len(widths) == 1 and 6 <= min(widths) <= 10:
        try:
            values = np.array([parts for _, parts in numbered], dtype=np.float64)[:, :9]
        except ValueError:
            values = None
    if values is None or not np.isfinite(values).all():
        values = None
        for k, (n, parts) in enumerate(numbered):
            if not 6 <= len(parts) <= 10:
                raise _bad_gt(path, n, lines[n - 1], f"{len(parts)} comma-separated values")
            try:
                v = np.asarray(parts, dtype=np.float64)
            except ValueError:
                raise _bad_gt(path, n, lines[n - 1], "not numbers") from None
            if not np.isfinite(v).all():
                raise _bad_gt(path, n, lines[n - 1], "not finite numbers")
            rows[k, :min(len(v), 9)] = v[:9]
    else:
        rows[:, :values.shape[1]] = values
    bad = (rows[:, 0] < 1) | (rows[:, 0] != np.floor(rows[:, 0])) | (rows[:, 1] != np.floor(rows[:, 1]))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _bad_gt(path, int(lineno[k]), lines[lineno[k] - 1], "frame must be an integer >= 1 and id an integer")
    rows[rows[:, 7] == -1, 7] = PEDESTRIAN        # 2D MOT 2015: no class
    rows[rows[:, 8] < 0, 8] = 1.0                 # no visibility: fully visible
    return rows, lineno


def _pick_copies(folders):
    """MOT17's three copies of a sequence (``-DPM``, ``-FRCNN``, ``-SDP``) -> one (FRCNN first)."""
    groups = {}
    for f in folders:
        m = _COPY.fullmatch(f.name)
        groups.setdefault(m.group(1) if m else f.name, []).append(f)
    kept = []
    rank = {c: i for i, c in enumerate(MOT17_COPIES)}
    for group in groups.values():
        kept.append(min(group, key=lambda f: rank.get(f.name.rsplit("-", 1)[-1], -1)))
    if len(kept) < len(folders):
        logger.info(f"MOT data: {len(folders) - len(kept)} of {len(folders)} sequences are MOT17's copies "
                    f"(-DPM/-FRCNN/-SDP, the same frames and gt): one of each is read, e.g. {kept[0].name}")
    return sorted(kept)


def _classes_of(seqs, folder):
    """{class value: name} of a split: the sequences' ``[Classes]`` (all alike), else pedestrian."""
    named = [(s, s.classes) for s in seqs if s.classes is not None]
    if not named:
        return dict(DEFAULT_CLASSES)
    first = named[0]
    for s, classes in named[1:]:
        if classes != first[1]:
            raise UserError(f"{s.folder / 'seqinfo.ini'}: [Classes] differs from {first[0].folder / 'seqinfo.ini'} "
                            f"(the sequences of {folder} must name the same classes)")
    return dict(sorted(first[1].items()))


class MotSource(IndexedSource):
    """One split of a MOT root (module docstring): the attributes of ``CocoSource`` (``coco``,
    ``class_ids`` (the class column's values), ``class_names``, ``ids``, ``table``, ``boxes``,
    ``unreadable``, ``img_dir``, ``ann_file``, ``path()``, ``size()``) plus ``sequences`` (the
    ``Sequence`` s read), ``part`` ('all', 'first', 'second'), ``track_ids`` and ``visibility``
    [M] aligned with the table's boxes, and ``ignore`` (an ``Ignore``: the ignore regions).

    ``class_names`` (e.g. a checkpoint's) must equal the classes the sequences name: MOT classes
    are numbers in gt.txt, so other names would silently mean other classes.
    """

    def __init__(self, root, split, class_names=None, min_visibility=0.0, flag="--data"):
        self.root, self.split = Path(root), split
        folder, self.part = mot_split(root, split, flag)
        self.img_dir = self.ann_file = folder          # what the shared cleaning messages name
        self.min_visibility = float(min_visibility)
        folders = _pick_copies(sequences_in(folder))
        self.sequences = [read_seqinfo(f, k + 1) for k, f in enumerate(folders)]
        classes = _classes_of(self.sequences, folder)
        names = tuple(classes.values())
        if class_names is not None and tuple(class_names) != names:
            raise UserError(f"{flag}: MOT data {folder} names the classes {list(names)}, not the expected "
                            f"{list(class_names)}")
        class_ids = np.asarray(list(classes), np.int64)
        columns, rows = self._columns(class_ids)
        if not len(columns.img_ids):
            raise UserError(f"{flag}: MOT data {folder}: the {split} split holds no frames (the second half of "
                            "a 1-frame sequence is empty: give the data a val/ folder)")
        table = BoxTable.clean(columns, class_ids, folder, folder)
        self._hold(table, class_ids.tolist(), names)
        self._keep_tracks(columns, rows, class_ids)

    def frames(self, seq):
        """The frame numbers of ``seq`` this split holds (its part)."""
        lo, hi = part_frames(seq.length, self.part)
        return np.arange(lo, hi + 1, dtype=np.int64)

    def _columns(self, class_ids):
        """``Columns`` of every frame of the split and the gt rows ([M, 9], ignore flag) behind
        their annotations."""
        ids, names, hw, parts, ignores = [], [], [], [], []
        other = 0
        for seq in self.sequences:
            files = check_frames(seq)
            gt_file = seq.folder / "gt" / "gt.txt"
            rows, lineno = parse_gt(gt_file)
            self._check_gt_frames(seq, rows, lineno, gt_file)
            frames = self.frames(seq)
            if not len(frames):
                continue
            ids.append(seq.number * FRAME_STRIDE + frames)
            names += [files[f - 1] for f in frames.tolist()]
            hw.append(np.tile([seq.height, seq.width], (len(frames), 1)))
            rows = rows[(rows[:, 0] >= frames[0]) & (rows[:, 0] <= frames[-1])]
            cls = rows[:, 7].astype(np.int64)
            is_obj = np.isin(cls, class_ids)
            distractor = np.isin(cls, DISTRACTORS) & ~is_obj & bool(np.isin(PEDESTRIAN, class_ids))
            ignore = (is_obj & ((rows[:, 6] == 0) | (rows[:, 8] < self.min_visibility))) | distractor
            other += int((~is_obj & ~distractor).sum())
            rows = rows[is_obj | distractor].copy()
            rows[distractor[is_obj | distractor], 7] = PEDESTRIAN
            rows[:, 0] += seq.number * FRAME_STRIDE            # frame -> image id
            parts.append(rows)
            ignores.append(ignore[is_obj | distractor])
        if other:
            logger.info(f"MOT data {self.img_dir}: {other} gt rows of classes that are neither "
                        f"{', '.join(map(str, class_ids.tolist()))} nor distractors left out")
        rows = np.concatenate(parts) if parts else np.zeros((0, 9))
        crowd = np.concatenate(ignores) if ignores else np.zeros(0, bool)
        ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        hw = np.concatenate(hw) if hw else np.zeros((0, 2))
        columns = Columns(ids, hw, names, rows[:, 0].astype(np.int64), rows[:, 7].astype(np.int64),
                          rows[:, 2:6], crowd)
        return columns, rows

    @staticmethod
    def _check_gt_frames(seq, rows, lineno, gt_file):
        """Every frame gt.txt lists must have its image."""
        frames = rows[:, 0].astype(np.int64)
        im_dir = seq.folder / seq.im_dir
        missing = frames > seq.length
        unique = np.unique(frames[~missing])
        present = {f for f in unique.tolist() if (im_dir / mot_frame_name(f, seq.ext)).is_file()}
        if len(present) < len(unique):
            missing |= ~np.isin(frames, np.fromiter(present, np.int64, len(present)))
        if missing.any():
            k = int(np.flatnonzero(missing)[0])
            raise UserError(f"gt file {gt_file} line {int(lineno[k])}: frame {int(frames[k])} has no image "
                            f"{im_dir / mot_frame_name(int(frames[k]), seq.ext)}")

    def _keep_tracks(self, columns, rows, class_ids):
        """``track_ids`` / ``visibility`` of the table's boxes and the cleaned ignore regions: the
        cleaning's own rule (clip to the image, drop zero area, per image in listed order) applied
        to the rows, checked against the table it built."""
        t = self.table
        pos = find_sorted(t.ids, columns.ann_img)
        xywh = rows[:, 2:6]
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + np.maximum(xywh[:, 2:], 0)], axis=1)
        clipped = np.clip(xyxy, 0, np.tile(t.hw[np.maximum(pos, 0)][:, ::-1], 2)) if len(t) else xyxy
        area = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & (pos >= 0)
        crowd = np.asarray(columns.ann_crowd, bool)
        boxes = np.flatnonzero(area & ~crowd)
        boxes = boxes[np.argsort(pos[boxes], kind="stable")]
        if len(boxes) != len(t.boxes) or not np.array_equal(clipped[boxes], t.boxes):
            raise RuntimeError("MOT reader: track ids out of step with the cleaned boxes")
        self.track_ids = rows[boxes, 1].astype(np.int64)
        self.visibility = rows[boxes, 8].copy()
        ign = np.flatnonzero(area & crowd)
        ign = ign[np.argsort(pos[ign], kind="stable")]
        self.ignore = Ignore(columns.ann_img[ign], clipped[ign], find_sorted(class_ids, columns.ann_cat[ign]),
                             rows[ign, 1].astype(np.int64))
        for a in (self.track_ids, self.visibility, *self.ignore):
            a.flags.writeable = False

    def sequence_of(self, img_id):
        """(``Sequence``, frame) of image ``img_id``."""
        number, frame = divmod(int(img_id), FRAME_STRIDE)
        return self.sequences[number - 1], frame

    def _index(self):
        """pycocotools index: every frame, the boxes, and the ignore regions as ``iscrowd``."""
        t, ign = self.table, self.ignore
        cat = np.asarray(self.class_ids, np.int64)
        instances = coco_instances(
            t.ids, [t.file_name_at(r) for r in range(len(t))], t.hw,
            box_img=np.concatenate([np.repeat(t.ids, t.counts), ign.img]),
            box_cat=cat[np.concatenate([t.cls, ign.cls])], xyxy=np.concatenate([t.boxes, ign.boxes]),
            crowd=np.concatenate([t.crowd, np.ones(len(ign.img), bool)]),
            categories=zip(cat.tolist(), self.class_names))
        return coco_from_dict(instances, self.ann_file)


def class_names_of(root, flag="--data"):
    """The class names of a MOT root from its seqinfo.ini files alone (no gt read)."""
    folder, _ = mot_split(root, "train", flag)
    seqs = [read_seqinfo(f) for f in _pick_copies(sequences_in(folder))]
    return tuple(_classes_of(seqs, folder).values())
