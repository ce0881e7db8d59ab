"""Convert a detection data set between the COCO json, Pascal VOC, YOLO (Ultralytics) and MOT layouts.

Usage: python -m detcore.data.convert SRC --out DIR --format {coco,voc,yolo,mot} [--splits train,val]
                                 [--link {hard,sym}]
(also ``python tools/convert_data.py`` in a checkout and the ``detkit-convert-data`` console script)

Why through the in-memory index: SRC is opened by ``detcore.data.layout`` exactly as training opens
it, so what is written is what training would have read, cleaned by the one policy (boxes clipped
to their image, zero-area ones dropped, missing images skipped, all said once); a converted set
never carries a box training would refuse. Every box is written from the same float64 pixel
arrays, so a round trip COCO -> YOLO -> COCO keeps each box within 1e-6 of the image size (YOLO
lines carry 8 decimals) and every class name.

What each layout keeps:
- COCO: ``DIR/annotations/instances_{split}2017.json`` + ``DIR/{split}2017/``. Category ids are the
  source's when they are COCO's own (>= 1), else 1..K in class order; image ids likewise (a 0-based
  id becomes id + 1). Background images are listed without annotations.
- YOLO: ``DIR/data.yaml`` (``names`` and the splits; no ``path``, so detkit and Ultralytics both
  read it relative to the yaml), ``DIR/images/{split}/``, ``DIR/labels/{split}/*.txt``;
  background images get an empty label file. YOLO has no crowd / difficult flag: such boxes
  (VOC's difficult ones; COCO's crowd boxes are already ignored by the cleaning) become ordinary
  boxes, counted in one warning.
- VOC: ``DIR/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}``, train -> trainval, val
  -> test (the layout detkit reads; a ``test`` split has no place and is left out with a warning).
  VOC boxes are integer pixels written as the exact inverse of ``detcore.data.voc``'s reading (which
  is upstream YOLOX's, ``int(v) - 1`` for all four): ``x + 1`` for each, rounded. VOC output is
  therefore exact for integer boxes and a round trip through it gives them back; it is one pixel
  wider and taller than the usual COCO -> VOC export (``xmax = x + w``, as ``make_shapes --format
  voc`` writes), which detkit reads one pixel smaller. Images that are not JPEG
  are re-encoded as JPEG (quality 95), JPEGImages holding ``.jpg`` only.
- MOT: ``DIR/{split}/SEQ/{seqinfo.ini, img1/000001.jpg..., gt/gt.txt}`` (``detcore.data.mot``).
  A MOT source keeps its sequences (names, frame rate, track ids, visibility, ignore regions),
  frames renumbered 1.. within the split (a val half starts at 1). Any other source is not a
  video: each image is one frame, of one sequence per split and image size and suffix (a
  ``seqinfo.ini`` has one size), named ``{split}-01``..., frameRate 1, in image id order; every
  box is its own track. Crowd / difficult boxes become ``consider`` 0 rows (ignore regions); the
  class column is the class index + 1, named in ``seqinfo.ini``'s ``[Classes]``.

The files of each layout are written by ``detcore.data.writers`` (as the shapes generator's are);
the box conventions above are chosen here. Images are copied, or linked with ``--link hard``
(same file system) / ``--link sym`` (absolute targets). The whole output is written into a hidden
folder beside DIR and renamed to DIR at the end, so an interrupted conversion leaves no
half-written data set; DIR must not exist or be empty.
"""
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import ArgParser, UserError, cli_entry
from detcore.data.index import coco_instances
from detcore.data.layout import COCO_SPLITS, detect_layout, open_split, voc_sets
from detcore.data.writers import (mot_frame_name, mot_gt_lines, mot_sequence, voc_root, write_coco_json,
                                  write_data_yaml, write_image_set, write_mot_gt, write_seqinfo, write_voc_xml,
                                  write_yolo_labels, yolo_dirs, yolo_lines)

FORMATS = ("coco", "voc", "yolo", "mot")
LINKS = ("hard", "sym")
VOC_LISTS = {"train": "trainval", "val": "test"}


def available_splits(src):
    """The splits the data at ``src`` has: a yaml's keys, a COCO root's jsons, a VOC devkit's
    train and val lists, a MOT root's split folders (as ``detcore.data.layout`` would open them)."""
    layout = detect_layout(src, "SRC")
    if layout.kind == "mot":
        from detcore.data.mot import available_splits as mot_splits
        return mot_splits(layout.path)
    if layout.kind == "yolo":
        from detcore.data.yolo import DataYaml
        return [s for s in COCO_SPLITS if s in DataYaml(layout.path).splits]
    if layout.kind == "coco":
        return [s for s, (_, ann) in COCO_SPLITS.items() if (layout.path / "annotations" / ann).is_file()]
    found = []
    for split in ("train", "val"):
        try:
            voc_sets(layout.path, layout.years, split, "SRC")
            found.append(split)
        except UserError:
            pass
    return found


def _unique_names(rel_names):
    """Output file names of one split: the base names when they are unique, else the relative
    paths with ``/`` turned into ``__`` (two ``0001.jpg`` in different folders stay two files)."""
    base = [os.path.basename(n) for n in rel_names]
    if len(set(base)) == len(base):
        return base
    return [n.replace("\\", "/").replace("/", "__") for n in rel_names]


def _place(src, dst, link):
    """Copy ``src`` to ``dst`` or link it (``hard`` / ``sym``); one line when that fails."""
    try:
        if link == "hard":
            os.link(src, dst)
        elif link == "sym":
            os.symlink(os.path.abspath(src), dst)
        else:
            shutil.copyfile(src, dst)
    except OSError as exc:
        hint = " (a hard link needs one file system: try --link sym)" if link == "hard" else ""
        raise UserError(f"cannot {'link' if link else 'copy'} {src} to {dst}: "
                        f"{exc.strerror or exc}{hint}") from None


class _Split:
    """One source split as the writers read it: per image (row) its id, size and output name,
    per box its image row, class index, xyxy pixels and crowd flag (flat arrays)."""

    def __init__(self, source):
        t = source.table
        self.source, self.table = source, t
        self.rel = [t.file_name_at(r) for r in range(len(t))]
        self.names = _unique_names(self.rel)
        self.owner = np.repeat(np.arange(len(t)), t.counts)
        self.hw = t.hw

    def src_path(self, row):
        return self.source.img_dir / self.rel[row]


def _coco_ids(values):
    """COCO ids: the values themselves when all are >= 1, else shifted to start at 1."""
    values = np.asarray(values, np.int64)
    return values if values.size == 0 or values.min() >= 1 else values - values.min() + 1


def _coco_split(out, split, part, class_names, class_ids, link):
    folder = out / COCO_SPLITS[split][0]
    folder.mkdir(parents=True, exist_ok=True)
    t = part.table
    img_ids = _coco_ids(t.ids)
    cat_ids = _coco_ids(class_ids)
    for r, name in enumerate(part.names):
        _place(part.src_path(r), folder / name, link)
    instances = coco_instances(img_ids, part.names, t.hw, box_img=img_ids[part.owner],
                               box_cat=cat_ids[t.cls], xyxy=t.boxes, crowd=t.crowd,
                               categories=zip(cat_ids.tolist(), class_names))
    write_coco_json(out / "annotations" / COCO_SPLITS[split][1], instances)


def _yolo_split(out, split, part, link):
    img_dir, label_dir = yolo_dirs(out, split)
    t = part.table
    wh = np.tile(t.hw[part.owner][:, ::-1], 2)
    norm = t.boxes / wh if len(wh) else np.zeros((0, 4))
    lines = yolo_lines(t.cls.tolist(), np.concatenate([(norm[:, :2] + norm[:, 2:]) / 2,
                                                       norm[:, 2:] - norm[:, :2]], axis=1).tolist())
    for r, name in enumerate(part.names):
        _place(part.src_path(r), img_dir / name, link)
        write_yolo_labels(label_dir / (os.path.splitext(name)[0] + ".txt"), lines[t.first[r]:t.first[r + 1]])
    if t.crowd.any():
        logger.warning(f"{split}: {int(t.crowd.sum())} crowd / difficult boxes written as ordinary "
                       "boxes (YOLO labels have no such flag)")


def _voc_split(out, split, part, class_names, link, taken):
    """One split into VOCdevkit/VOC2007; ``taken``: stems used by earlier splits (a stem names
    one image across the devkit)."""
    import cv2

    root = voc_root(out)
    t = part.table
    # detcore.data.voc reads int(float(v)) - 1 for all four (upstream YOLOX's reading): write each + 1,
    # rounded to whole pixels, so VOC -> COCO -> VOC and COCO -> VOC -> COCO give back the boxes
    ints = np.rint(t.boxes).astype(np.int64) + 1
    stems = []
    for r, name in enumerate(part.names):
        stem = os.path.splitext(name)[0]
        if stem in taken:
            stem = f"{split}_{stem}"
        taken.add(stem)
        stems.append(stem)
        src, jpg = part.src_path(r), root / "JPEGImages" / f"{stem}.jpg"
        if src.suffix.lower() in (".jpg", ".jpeg"):
            _place(src, jpg, link)
        else:
            img = cv2.imread(str(src))
            if img is None or not cv2.imwrite(str(jpg), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise UserError(f"cannot re-encode {src} as {jpg} (VOC's JPEGImages holds .jpg files)")
        h, w = (int(v) for v in t.hw[r])
        s = slice(t.first[r], t.first[r + 1])
        objects = [(class_names[c], b, int(d), None) for c, b, d in
                   zip(t.cls[s].tolist(), ints[s].tolist(), t.crowd[s].tolist())]
        write_voc_xml(root, stem, w, h, objects)
    write_image_set(root, VOC_LISTS[split], stems)


def _mot_groups(split, part):
    """(name, frame rate, rows) of each sequence to write: a MOT source's own sequences, else one
    per image size and suffix (rows in image id order)."""
    t, source = part.table, part.source
    if hasattr(source, "sequences"):
        from detcore.data.mot import FRAME_STRIDE
        number = t.ids // FRAME_STRIDE
        return [(seq.name, seq.frame_rate, np.flatnonzero(number == seq.number)) for seq in source.sequences
                if (number == seq.number).any()]
    keys = [(int(h), int(w), os.path.splitext(n)[1].lower()) for (h, w), n in zip(t.hw.tolist(), part.names)]
    order = sorted(set(keys), key=keys.index)
    return [(f"{split}-{k + 1:02d}", 1, np.asarray([r for r, key in enumerate(keys) if key == want], np.int64))
            for k, want in enumerate(order)]


def _mot_split(out, split, part, class_names, link):
    """One split as MOT sequences under ``out/{split}/``."""
    t, source = part.table, part.source
    tracks = getattr(source, "track_ids", None)
    vis = getattr(source, "visibility", None)
    ignore = getattr(source, "ignore", None)
    ign_row = (np.searchsorted(t.ids, ignore.img) if ignore is not None and len(ignore.img)
               else np.zeros(0, np.int64))
    classes = [(k + 1, n) for k, n in enumerate(class_names)]
    for name, rate, rows in _mot_groups(split, part):
        folder = mot_sequence(out, split, name)
        ext = os.path.splitext(part.names[rows[0]])[1]
        frame_of = np.zeros(len(t), np.int64)
        frame_of[rows] = np.arange(1, len(rows) + 1)
        for r in rows.tolist():
            _place(part.src_path(r), folder / "img1" / mot_frame_name(int(frame_of[r]), ext), link)
        boxes = np.flatnonzero(np.isin(part.owner, rows))
        ign = np.flatnonzero(np.isin(ign_row, rows))
        xyxy = np.concatenate([t.boxes[boxes], ignore.boxes[ign] if len(ign) else np.zeros((0, 4))])
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        frames = np.concatenate([frame_of[part.owner[boxes]], frame_of[ign_row[ign]]])
        ids = np.concatenate([tracks[boxes] if tracks is not None else np.arange(1, len(boxes) + 1),
                              ignore.track_ids[ign] if len(ign) else np.zeros(0, np.int64)])
        consider = np.concatenate([~t.crowd[boxes], np.zeros(len(ign), bool)]).astype(int)
        cls = np.concatenate([t.cls[boxes], ignore.cls[ign] if len(ign) else np.zeros(0, np.int64)]) + 1
        visibility = np.concatenate([vis[boxes] if vis is not None else np.ones(len(boxes)), np.ones(len(ign))])
        order = np.lexsort((ids, frames))
        h, w = (int(v) for v in t.hw[rows[0]])
        write_seqinfo(folder, len(rows), w, h, rate or 1, ext, classes)
        write_mot_gt(folder, mot_gt_lines(frames[order], ids[order], xywh[order], consider[order], cls[order],
                                          visibility[order]))


def _open_alike(src, splits):
    """The sources of ``splits``, labelled alike. Where a layout infers the classes from each
    split's own files (VOC: the names its xmls use, sorted), a split may lack a class another
    has: all are then opened again with the sorted union, so one class list covers every split.
    Where the layout fixes them (a yaml's names, a json's categories) they must agree."""
    sources = [open_split(src, s, flag="SRC") for s in splits]
    found = {tuple(s.class_names) for s in sources}
    if len(found) > 1:
        union = tuple(sorted(set().union(*found)))
        sources = [open_split(src, s, class_names=union, flag="SRC") for s in splits]
        if any(tuple(s.class_names) != union for s in sources):
            raise UserError(f"SRC {src}: its splits list different classes "
                            f"({'; '.join(', '.join(f) for f in sorted(found))})")
    return sources


def convert(src, out, fmt, splits=None, link=None):
    """Convert the data at ``src`` (any layout) into ``out`` in ``fmt``; returns the path to
    pass to training (``out``, or ``out/data.yaml`` for YOLO)."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt}")
    if link not in (None, *LINKS):
        raise UserError(f"--link must be hard or sym, got {link}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder (the conversion writes a new data set)")
    have = available_splits(src)
    splits = list(splits) if splits else have
    missing = [s for s in splits if s not in have]
    if missing or not splits:
        raise UserError(f"SRC {src} has no {', '.join(missing) or 'split'} split (it has: {', '.join(have) or 'none'})")
    if fmt == "voc" and "test" in splits:
        logger.warning("VOC output: the test split is left out (detkit's VOC layout has trainval and test, "
                       "which hold train and val)")
        splits = [s for s in splits if s != "test"]
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        sources = _open_alike(src, splits)
        names, taken = sources[0].class_names, set()
        for split, source in zip(splits, sources):
            part = _Split(source)
            if fmt == "coco":
                _coco_split(work, split, part, names, source.class_ids, link)
            elif fmt == "yolo":
                _yolo_split(work, split, part, link)
            elif fmt == "mot":
                _mot_split(work, split, part, names, link)
            else:
                _voc_split(work, split, part, names, link, taken)
            logger.info(f"{split}: {len(part.names)} images, {len(part.owner)} boxes")
        if fmt == "yolo":
            write_data_yaml(work, splits, names, "written by detkit-convert-data")
        os.chmod(work, 0o777 & ~_umask())
        if out.exists():
            out.rmdir()                          # empty (checked above): the rename takes its place
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out / "data.yaml" if fmt == "yolo" else out


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask



def make_parser():
    parser = ArgParser(prog="detkit-convert-data", description=__doc__.splitlines()[0], name_tool=False)
    parser.add_argument("src", help="the data: a COCO root, a VOC devkit, a YOLO data.yaml or a MOT root")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout to write")
    parser.add_argument("--splits", default=None,
                        help="comma-separated splits to convert (default: every split SRC has)")
    parser.add_argument("--link", choices=LINKS, default=None,
                        help="hard- or symlink the images instead of copying them")
    return parser


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    bad = [s for s in splits or () if s not in COCO_SPLITS]
    if bad:
        raise UserError(f"--splits: unknown split {bad[0]!r} (choose from {', '.join(COCO_SPLITS)})")
    where = convert(args.src, args.out, args.format, splits, args.link)
    print(f"wrote {args.format} data to {where}")


if __name__ == "__main__":
    main()
