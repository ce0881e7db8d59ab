"""detkit-check-data -d DATA_DIR [--strict] [--plot [PNG]] [--classes A,B,...]: what a data set
holds and what is wrong with it, split by split, before a training run finds out the slow way.

Usage: python -m detcore.data.check -d DIR (also ``python tools/check_data.py`` in a checkout and
the ``detkit-check-data`` console script). DIR is anything the trainers read: a COCO root
(annotations/instances_{train,val}2017.json, train2017/, val2017/), a Pascal VOC devkit or a YOLO
data.yaml; the splits are opened by ``detcore.data.layout.open_sources``, the trainers' own way in,
through the ONE cleaning policy of ``detcore.data.index`` inside ``auditing()``, which keeps the
annotations as listed beside the cleaned index. Every count below comes from that reading;
nothing parses the annotations a second time.

Per split: images (labelled, background), instances per class, image sizes, and the defects:
missing image files, unreadable images (empty, or no image header PIL knows), truncated JPEGs (no
end-of-image marker after any zero padding: the last bytes are read, nothing is decoded), image
size differing from the annotation, boxes out of the image (partly: training clips them; wholly:
training drops them), boxes of zero or negative area (dropped), exact duplicates (same image,
class and box), tiny boxes (< 2 px wide or high, as listed), annotations of unlisted images, image
ids listed twice, and (VOC) listed images without an xml; then the classes with no instance in a
split. Box counts are of the annotations as listed, before the cleaning clipped or dropped any.
``--strict`` exits 1 (one line) when anything is wrong; ``--plot`` draws the training split's
labels as training sees them (``detcore.data.labels_plot``).

``summary_line(source)`` is the one line a trainer prints at start: images, background images,
boxes, classes and what the cleaning found at load, from the counts the index already holds.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from loguru import logger

from accel.errors import ArgParser, UserError, cli_entry
from detcore.data.images import header_size, jpeg_truncated
from detcore.data.index import auditing

# (key, label) in the order they are printed; every one counts towards --strict
DEFECTS = (
    ("missing", "missing image files"),
    ("unreadable", "unreadable images (empty, no image header)"),
    ("truncated", "truncated JPEGs (no end marker)"),
    ("size_mismatch", "image size differs from annotation"),
    ("outside", "boxes out of the image"),
    ("degenerate", "boxes of zero or negative area"),
    ("duplicates", "exact duplicate boxes"),
    ("tiny", "tiny boxes (< 2 px wide or high)"),
    ("orphans", "annotations of unlisted images"),        # YOLO: label files without an image
    ("repeated_ids", "image ids listed twice"),
    ("no_xml", "listed images without annotation xml"),
)
TINY_PX = 2
DEFAULT_PLOT = "labels.png"


@dataclass
class SplitReport:
    """What ``check_split`` found in one split. ``defects`` maps each key of ``DEFECTS`` to a
    count, ``examples`` a defect to the first file showing it; ``instances`` [K] counts the
    annotations read per class (as listed, degenerate ones included); ``sizes`` is
    ((min h, min w), (median h, median w), (max h, max w)) of the images in the index, or None."""
    name: str
    kind: str
    where: str
    class_names: tuple
    listed: int
    in_index: int
    labelled: int
    background: int
    instances: np.ndarray
    crowd: int
    sizes: tuple
    wholly_outside: int
    summary: str
    defects: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)

    @property
    def problems(self):
        return sum(self.defects.values())


KINDS = {"CocoSource": "COCO", "VocSource": "VOC", "YoloSource": "YOLO", "MotSource": "MOT"}


def split_name(source):
    """How the messages name a split: the COCO image folder (``train2017``), the VOC image sets
    (``VOC2007 trainval``) or the YOLO yaml's split key (``train``)."""
    sets = getattr(source, "image_sets", None)
    if sets:
        return " + ".join(f"VOC{year} {name}" for year, name in sets)
    if KINDS.get(type(source).__name__) == "YOLO":
        return source.split
    return Path(source.img_dir).name


def duplicate_mask(keys):
    """[M] bool: row ``i`` of ``keys`` [M, D] repeats an earlier row bit for bit (the first of a
    group is not flagged). Each row is viewed as one opaque D*8-byte value and ``np.unique``
    sorts those once: 0.7 s at COCO train's 860k boxes, half of what a D-key lexsort takes."""
    keys = np.ascontiguousarray(keys, dtype=np.float64) + 0.0        # -0.0 -> 0.0: equal values, equal bits
    dup = np.ones(len(keys), dtype=bool)
    if not len(keys):
        return dup
    rows = keys.view(np.dtype((np.void, keys.itemsize * keys.shape[1]))).reshape(-1)
    dup[np.unique(rows, return_index=True)[1]] = False
    return dup


def summary_line(source, name=None):
    """One line on a split for a trainer to print at start: images (background ones: no box
    left), boxes, classes with boxes, and what the cleaning did at load (images skipped, boxes
    clipped or dropped) plus the tiny and duplicate boxes left in the index. Reads only the
    index's arrays and counts (no file is opened): a fraction of a second at COCO scale."""
    table = source.table
    cleaning = table.cleaning
    counts = table.counts
    k = len(source.class_names)
    used = int((np.bincount(table.cls, minlength=k) > 0).sum())
    wh = table.boxes[:, 2:] - table.boxes[:, :2]
    rows = np.repeat(np.arange(len(table)), counts)
    skipped = cleaning.get("images_skipped", 0) + len(getattr(source, "missing_xmls", None) or ())
    found = ((skipped, "image skipped (missing or empty)", "images skipped (missing or empty)"),
             (cleaning.get("clipped", 0), "box clipped to its image", "boxes clipped to their image"),
             (cleaning.get("dropped", 0), "box dropped (zero area)", "boxes dropped (zero area)"),
             (int((wh < TINY_PX).any(axis=1).sum()), f"tiny box (< {TINY_PX} px)", f"tiny boxes (< {TINY_PX} px)"),
             (int(duplicate_mask(np.column_stack([rows, table.cls, table.boxes])).sum()),
              "duplicate box", "duplicate boxes"))
    said = [f"{n} {one if n == 1 else many}" for n, one, many in found if n]
    defects = "defects at load: " + ", ".join(said) if said else "no defects found at load"
    return (f"{name or split_name(source)}: {len(table)} images ({int((counts == 0).sum())} background), "
            f"{len(table.cls)} boxes of {used}/{k} classes; {defects}")


def _inspect(path):
    """(width, height, truncated) of an image file from its header and last bytes; None when it
    has no image header PIL can read. PIL's ``open`` reads the header only, no pixels."""
    size = header_size(path)
    if size is None:
        return None
    try:
        return (*size, jpeg_truncated(path))
    except OSError:
        return None


def _inspect_all(paths):
    """``_inspect`` of every path, in threads (opening and reading files waits on the disk)."""
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(_inspect, paths))


def check_split(source, name=None):
    """The ``SplitReport`` of a source opened inside ``detcore.data.index.auditing()``; vectorised over
    boxes, one header read per image file."""
    table, audit = source.table, source.table.audit
    if audit is None:
        raise ValueError("check_split needs a source opened inside detcore.data.index.auditing()")
    name = name or split_name(source)
    k = len(source.class_names)
    defects, examples = dict.fromkeys((key for key, _ in DEFECTS), 0), {}
    names = audit.file_names

    def flag(key, mask, files):
        """Count ``mask`` under ``key``; the first flagged entry's file is the example."""
        hits = np.flatnonzero(mask)
        defects[key] = len(hits)
        if len(hits):
            examples[key] = files(int(hits[0]))

    # images: listed, present (in the index), then their headers and last bytes
    flag("missing", audit.file_sizes < 0, lambda i: names[i])
    present = np.flatnonzero(audit.file_sizes > 0)            # row r of the table is present[r]
    seen = _inspect_all([Path(source.img_dir) / names[i] for i in present.tolist()])
    ok = np.array([s is not None for s in seen], dtype=bool)
    header = np.array([s[:2] if s is not None else (0, 0) for s in seen], dtype=np.int64).reshape(-1, 2)
    truncated = np.array([bool(s and s[2]) for s in seen], dtype=bool)
    empty = np.flatnonzero(audit.file_sizes == 0)
    unreadable = np.concatenate([empty, present[~ok]])
    defects["unreadable"] = len(unreadable)
    if len(unreadable):
        examples["unreadable"] = names[int(np.sort(unreadable)[0])]
    table_of = lambda r: table.file_name_at(r)                     # noqa: E731
    flag("truncated", truncated, table_of)
    listed_wh = table.hw[:, ::-1].astype(np.int64)
    flag("size_mismatch", ok & (header != listed_wh).any(axis=1), table_of)
    defects["repeated_ids"] = audit.entries - len(audit.ids)
    defects["orphans"] = audit.orphans + len(getattr(source, "orphan_labels", None) or ())   # YOLO: label files
    missing_xmls = list(getattr(source, "missing_xmls", ()) or ())
    defects["no_xml"] = len(missing_xmls)
    if missing_xmls:
        examples["no_xml"] = str(missing_xmls[0])

    # boxes as listed, against the listed size of their image
    x, y, w, h = audit.xywh.T
    img_h, img_w = table.hw[audit.row, 0], table.hw[audit.row, 1]
    degenerate = ~((w > 0) & (h > 0))                                # NaN sizes are degenerate too
    x2, y2 = x + w, y + h
    outside = ~degenerate & ((x < 0) | (y < 0) | (x2 > img_w) | (y2 > img_h))
    wholly = ~degenerate & ((x >= img_w) | (y >= img_h) | (x2 <= 0) | (y2 <= 0))
    box_file = lambda i: table.file_name_at(int(audit.row[i]))     # noqa: E731
    flag("degenerate", degenerate, box_file)
    flag("outside", outside, box_file)
    flag("tiny", ~degenerate & ((w < TINY_PX) | (h < TINY_PX)), box_file)
    flag("duplicates", duplicate_mask(np.column_stack([audit.row, audit.cls, audit.xywh])), box_file)

    hw = table.hw.astype(np.int64)
    sizes = (tuple(tuple(int(v) for v in f(hw, axis=0)) for f in (np.min, np.median, np.max))
             if len(hw) else None)
    labelled = len(np.unique(audit.row))
    # COCO's crowd boxes are not read (ignored); VOC's difficult ones are read, flagged crowd
    crowd = int(audit.crowd.sum()) + table.cleaning.get("crowd_ignored", 0)
    return SplitReport(
        name=name, kind=KINDS.get(type(source).__name__, type(source).__name__), where=str(source.ann_file),
        class_names=tuple(source.class_names), listed=len(audit.ids), in_index=len(table), labelled=labelled,
        background=len(table) - labelled, instances=np.bincount(audit.cls, minlength=k), crowd=crowd,
        sizes=sizes, wholly_outside=int(wholly.sum()), summary=summary_line(source, name),
        defects=defects, examples=examples)


def open_splits(data_dir, class_names=None):
    """[(name, source)] of train and val, opened by ``detcore.data.layout.open_sources`` (the one place
    that recognises a layout, as every trainer does) inside ``auditing()``. The cleaning's own
    warnings are silenced meanwhile: the report counts what they would say."""
    from detcore.data.layout import open_sources

    logger.disable("detcore")
    try:
        with auditing():
            train, val = open_sources(data_dir, train=True, class_names=class_names, flag="--data")
    finally:
        logger.enable("detcore")
    return [(split_name(s), s) for s in (train, val)]


def check_splits(splits):
    """([SplitReport] of ``open_splits``' answer, {split name: class names with no instance in it})."""
    reports = [check_split(source, name) for name, source in splits]
    empty = {r.name: [n for n, c in zip(r.class_names, r.instances) if c == 0] for r in reports}
    return reports, empty


def check_data(data_dir, class_names=None):
    """``check_splits`` of the train and val splits under ``data_dir``."""
    return check_splits(open_splits(data_dir, class_names))


def problem_count(reports, empty):
    return sum(r.problems for r in reports) + sum(len(v) for v in empty.values())


def format_report(reports, empty):
    """The text ``detkit-check-data`` prints."""
    lines = []
    for r in reports:
        lines.append(f"{r.name}  ({r.kind}: {r.where})")
        lines.append(f"  images        {r.listed} listed, {r.in_index} in the index: {r.labelled} labelled, "
                     f"{r.background} background (no objects)")
        per_class = ", ".join(f"{n} {int(c)}" for n, c in zip(r.class_names, r.instances))
        crowd = f" (+{r.crowd} {'difficult, kept' if r.kind == 'VOC' else 'crowd, ignored'})" if r.crowd else ""
        lines.append(f"  instances     {int(r.instances.sum())}{crowd}: {per_class}")
        if r.sizes:
            lines.append("  image sizes   " + ", ".join(f"{what} {h}x{w}" for what, (h, w) in
                                                       zip(("min", "median", "max"), r.sizes)) + " (h x w)")
        for key, label in DEFECTS:
            if key == "no_xml" and r.kind != "VOC":
                continue
            n = r.defects[key]
            note = f"  e.g. {r.examples[key]}" if key in r.examples else ""
            if key == "outside" and n:
                note = f"  ({r.wholly_outside} wholly outside: dropped; the rest clipped){note}"
            lines.append(f"  {label:<44}{n:>6}{note}")
        lines.append(f"  summary: {r.summary}")
    for name, names in empty.items():
        lines.append(f"classes with no instance in {name}: {', '.join(names) if names else '-'}")
    n = problem_count(reports, empty)
    lines.append(f"{n} problem{'s' if n != 1 else ''} found" if n else "no problems found")
    return "\n".join(lines)


def labels_of(source):
    """(counts per class [K], boxes [M, 4] normalised cx, cy, w, h) of a split as training sees it
    (the cleaned index: clipped, zero-area boxes dropped), what ``plot_labels`` draws."""
    table = source.table
    hw = np.repeat(table.hw, table.counts, axis=0)
    wh = table.boxes[:, 2:] - table.boxes[:, :2]
    centre = table.boxes[:, :2] + wh / 2
    boxes = np.concatenate([centre, wh], axis=1) / np.tile(hw[:, ::-1], 2)
    return np.bincount(table.cls, minlength=len(source.class_names)), boxes



def labels_folder(source):
    """Where a split's boxes come from, for messages: a YOLO split's labels folder, else its
    annotation file (COCO, one VOC set) or data folder."""
    if KINDS.get(type(source).__name__) == "YOLO":
        from detcore.data.yolo import label_path

        return label_path(Path(source.img_dir) / "x.jpg").parent
    return getattr(source, "ann_file", None) or source.img_dir


def require_boxes(source, name="train", allow_empty=False, allow_with="allow_empty_train True"):
    """A split without a single box is one ``UserError`` unless ``allow_empty`` (``allow_with``
    says how the user allows it): trained on background alone a detector learns to find nothing,
    and nothing else says so before the first evaluation."""
    if not allow_empty and len(source.table.cls) == 0:
        what = f"the {name} split" + ("" if split_name(source) == name else f" ({split_name(source)})")
        raise UserError(f"{what} has no boxes ({len(source.table)} images, "
                        f"labels in {labels_folder(source)}): training would learn background only; "
                        f"add labels, or allow it with {allow_with}")


def report_at_start(source, folder, name="train", allow_empty=False, allow_with="allow_empty_train True"):
    """What a trainer says of its training split before the first step: the one-line summary in
    the log and ``labels.png`` in the run's folder. A report: a failure is one warning line.

    The one exception: a split without a single box stops here (``require_boxes``)."""
    require_boxes(source, name, allow_empty, allow_with)
    try:
        logger.info(f"data: {summary_line(source, name)}")
        from detcore.data.labels_plot import plot_labels

        counts, boxes = labels_of(source)
        path = Path(folder) / "labels.png"
        plot_labels(source.class_names, counts, boxes, path,
                    title=f"{name}: {len(boxes)} boxes in {len(source.table)} images, as trained")
        return path
    except Exception as exc:        # noqa: BLE001 -- never the reason a run does not start
        logger.warning(f"labels plot / data summary not written ({type(exc).__name__}: {exc})")
        return None


def _class_list(text):
    names = tuple(n.strip() for n in text.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise UserError(f"--classes {text}: expected distinct comma-separated names")
    return names


@cli_entry
def main(argv=None):
    parser = ArgParser(prog="detkit-check-data", description=__doc__.splitlines()[0], name_tool=False)
    parser.add_argument("-d", "--data", "--data_dir", dest="data", required=True,
                        help="a COCO root (annotations/, train2017/, val2017/), a Pascal VOC devkit or a "
                             "YOLO data.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any problem is found")
    parser.add_argument("--plot", nargs="?", const=DEFAULT_PLOT, default=None, metavar="PNG",
                        help=f"draw the training split's labels to PNG (default {DEFAULT_PLOT})")
    parser.add_argument("--classes", type=_class_list, default=None,
                        help="VOC: the class names in label order (default: the sorted names found in "
                             "train), as an exp's class_names fixes them")
    args = parser.parse_args(argv)
    splits = open_splits(args.data, args.classes)
    reports, empty = check_splits(splits)
    print(format_report(reports, empty), flush=True)
    if args.plot:
        from detcore.data.labels_plot import plot_labels

        name, source = splits[0]
        counts, boxes = labels_of(source)
        plot_labels(source.class_names, counts, boxes, args.plot,
                    title=f"{name}: {len(boxes)} boxes in {len(source.table)} images, as trained")
        print(f"labels plot: {args.plot}")
    n = problem_count(reports, empty)
    if args.strict and n:
        print(f"error: {n} problem{'s' if n != 1 else ''} in {args.data} (--strict)", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
