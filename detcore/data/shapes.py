"""Synthetic COCO-format detection data: coloured shapes on textured, noisy backgrounds.

COCO cannot be downloaded here, so the demo and the tests train and evaluate on this set through
the very loaders real COCO uses. Every image is drawn from its own numpy Generator seeded with
(seed, split, index), so the output is byte-identical for a given seed and does not depend on the
order or number of images generated before it.

Usage: python -m detcore.data.shapes --out DIR --num-train N --num-val M --seed S
                                  [--format {coco,voc,yolo}] [--classes NAME,NAME,...]
                                  [--background N] [--video N [--frames F]]
(also ``python tools/make_shapes.py`` in a checkout and the ``detkit-make-shapes`` console script)
COCO (default): DIR/{train2017,val2017}/*.jpg and DIR/annotations/instances_{train,val}2017.json.
VOC: DIR/VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{trainval,test}.txt},
the train images as trainval and the val images as test, numbered 000001.. across both; the
same images and boxes as the COCO export (VOC's 1-based inclusive pixel coordinates), with small
boxes marked difficult, as real VOC marks hard objects.
YOLO: DIR/data.yaml (names, train: images/train, val: images/val; no ``path``, so both detkit
and Ultralytics read it relative to the yaml), DIR/images/{train,val}/*.jpg and
DIR/labels/{train,val}/*.txt ("class cx cy w h" normalised, class = category id - 1); the same
images and boxes as the COCO export.
``--background N`` adds N images without objects to each split (numbered after the others): COCO
images without annotations, VOC xmls without objects, YOLO images with an empty label file
(even ones) or none at all (odd ones), the two ways a YOLO set marks a background image. Why: a
set of real photos has such negatives, and both detectors must train and evaluate on them.
``--classes`` keeps a subset of the categories, in the given order (their class ids follow it):
shapes of the other categories are not drawn at all, while every random draw still happens, so
the kept shapes are exactly where they are in the full set.
``--video N`` writes N synthetic sequences per split in the MOTChallenge layout instead
(``detcore.data.shapes_video``).
The files are written by ``detcore.data.writers``, as the converter's are: one spelling per format.
"""
from pathlib import Path

import cv2
import numpy as np

from accel.errors import ArgParser, UserError, cli_entry
from detcore.data.writers import (voc_root, write_coco_json,
                                  write_data_yaml, write_image_set, write_voc_xml,
                                  write_yolo_labels, yolo_dirs, yolo_lines)

CATEGORIES = ("circle", "rectangle", "triangle", "star")
SIZE_RANGE = (256, 480)        # image width and height are drawn independently from this range
MIN_OBJ = 16                   # smallest shape extent in pixels (keeps the task learnable)
MAX_OBJECTS = 6                # objects per image are drawn from 0..MAX_OBJECTS
MIN_VISIBLE = 0.3              # drop a shape when less than this fraction of it stays visible
MIN_BOX_SIDE = 4               # drop a visible remnant thinner than this (pixels)
DIFFICULT_SIDE = 24            # VOC export: longer side under this -> difficult (~18% of boxes)
JPEG_QUALITY = 92
VIDEO_FRAMES = 30              # frames per --video sequence (detcore.data.shapes_video)
_SPLITS = (("train2017", 0), ("val2017", 1))
FORMATS = ("coco", "voc", "yolo")


def _background(rng, h, w):
    """Smooth random colour field (upsampled coarse grid) plus a base tone: a cheap texture."""
    base = rng.uniform(40, 215, size=3)
    gh, gw = rng.integers(3, 9, size=2)
    coarse = rng.normal(0.0, 22.0, size=(gh, gw, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (int(w), int(h)), interpolation=cv2.INTER_CUBIC)
    stripes = np.sin(np.arange(w, dtype=np.float32) * rng.uniform(0.05, 0.4) + rng.uniform(0, 6.3))
    img = base.astype(np.float32) + texture + rng.uniform(0, 12) * stripes[None, :, None]
    return img, base


def _shape_colour(rng, base):
    """A colour far from the background tone so shapes stay distinct from it."""
    cands = rng.uniform(0, 255, size=(16, 3))
    dist = np.linalg.norm(cands - base, axis=1)
    far = dist > 110
    return cands[int(np.argmax(far)) if far.any() else int(np.argmax(dist))]


def _polygon(rng, cls, cx, cy, r):
    """Vertices (int32 [K,2]) of a rectangle, triangle or star with circumradius ``r``."""
    rot = rng.uniform(0, 2 * np.pi)
    if cls == 1:   # rectangle: random aspect ratio, random rotation
        ar = rng.uniform(0.45, 1.0)
        half = np.arctan(ar)
        ang = rot + np.array([half, np.pi - half, np.pi + half, -half])
        rad = np.full(4, r)
    elif cls == 2:  # triangle: jittered equilateral
        ang = rot + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
        rad = np.full(3, r)
    else:           # five-pointed star
        ang = rot + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.4, 0.5))
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
    return np.round(pts).astype(np.int32)


def _draw_objects(rng, img, h, w, base, class_ids=None):
    """Draw 0..MAX_OBJECTS shapes; later ones occlude earlier ones. Returns (owner map, classes, areas).

    ``class_ids`` maps a CATEGORIES index to the category id to write, or None to leave that
    shape out (default: all, ids 1..4). A left-out shape still makes all its random draws, so
    the rest of the image is the same as with every category.
    """
    owner = np.full((h, w), 255, np.uint8)   # index of the shape that owns each pixel
    classes, full_areas = [], []
    n = int(rng.integers(0, MAX_OBJECTS + 1))
    max_ext = max(MIN_OBJ + 1, min(h, w) // 2)
    for _ in range(n):
        cls = int(rng.integers(0, len(CATEGORIES)))
        ext = float(np.exp(rng.uniform(np.log(MIN_OBJ), np.log(max_ext))))
        r = ext / 2
        cx, cy = rng.uniform(r * 0.4, w - r * 0.4), rng.uniform(r * 0.4, h - r * 0.4)
        colour = tuple(float(c) for c in _shape_colour(rng, base))
        pts = None if cls == 0 else _polygon(rng, cls, cx, cy, r)    # draws even when left out
        cat_id = cls + 1 if class_ids is None else class_ids[cls]
        if cat_id is None:
            continue
        k = len(classes)
        if cls == 0:
            centre, rad = (int(round(cx)), int(round(cy))), int(round(r))
            cv2.circle(img, centre, rad, colour, -1, cv2.LINE_AA)
            cv2.circle(owner, centre, rad, k, -1, cv2.LINE_8)
            area = np.pi * r * r
        else:
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
            cv2.fillPoly(owner, [pts], k, cv2.LINE_8)
            area = cv2.contourArea(pts.astype(np.float32))
        classes.append(cat_id)
        full_areas.append(max(area, 1.0))
    return owner, classes, full_areas


def _visible_boxes(owner, classes, full_areas):
    """COCO annotations (bbox of what is visible) for shapes that are not (almost) fully hidden."""
    anns = []
    if not classes:
        return anns
    counts = np.bincount(owner.ravel(), minlength=256)[: len(classes)]
    for k, (cls, full) in enumerate(zip(classes, full_areas)):
        if counts[k] < MIN_VISIBLE * full:
            continue
        box = _mask_box(owner == k)
        if min(box[2:]) < MIN_BOX_SIDE:
            continue
        anns.append({"category_id": cls, "bbox": box, "area": float(counts[k])})
    return anns


def _mask_box(mask):
    """[x, y, w, h] (floats) of the pixels set in ``mask`` (not empty)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]), float(ys[-1] + 1 - ys[0])]


def render_image(seed, split_idx, index, class_ids=None):
    """Render one image: returns (BGR uint8 image, list of partial COCO annotations).
    ``class_ids``: see ``_draw_objects`` (None: every category)."""
    rng = np.random.default_rng([seed, split_idx, index])
    w, h = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
    bg, base = _background(rng, h, w)
    img = np.clip(bg, 0, 255).astype(np.uint8)   # 8-bit so cv2 anti-aliases the shape edges
    owner, classes, full_areas = _draw_objects(rng, img, h, w, base, class_ids)
    noisy = img + rng.normal(0.0, rng.uniform(3, 10), size=img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8), _visible_boxes(owner, classes, full_areas)


def render_background(seed, split_idx, index):
    """Render one image without objects (the texture and noise of ``render_image``), drawn from
    its own seed stream so adding background images changes none of the others."""
    rng = np.random.default_rng([seed, split_idx + len(_SPLITS), index])
    w, h = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
    bg, _ = _background(rng, h, w)
    img = np.clip(bg, 0, 255).astype(np.uint8)
    noisy = img + rng.normal(0.0, rng.uniform(3, 10), size=img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def split_images(seed, split_idx, num, background=0, class_ids=None):
    """(1-based number, BGR image, partial COCO annotations) of a split: ``num`` images with
    shapes, then ``background`` without objects. Every writer draws from here, so the three
    formats hold the same images and boxes."""
    for i in range(num):
        img, anns = render_image(seed, split_idx, i, class_ids)
        yield i + 1, img, anns
    for i in range(background):
        yield num + i + 1, render_background(seed, split_idx, i), []


def _write_split(out, split, split_idx, num, seed, names=CATEGORIES, background=0):
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    class_ids = _class_ids(names)
    images, annotations = [], []
    for img_id, img, anns in split_images(seed, split_idx, num, background, class_ids):
        name = f"{img_id:012d}.jpg"
        if not cv2.imwrite(str(img_dir / name), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise UserError(f"--out {out}: could not write {img_dir / name}")
        images.append({"id": img_id, "file_name": name, "width": img.shape[1], "height": img.shape[0],
                       "license": 1})
        for ann in anns:
            ann.update(id=len(annotations) + 1, image_id=img_id, iscrowd=0, segmentation=[])
            annotations.append(ann)
    coco = {
        "info": {"description": f"detkit synthetic shapes ({split}, seed {seed})", "version": "1.0",
                 "year": 2024, "contributor": "tools/make_shapes.py"},
        "licenses": [{"id": 1, "name": "CC0", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(names)],
    }
    ann_file = out / "annotations" / f"instances_{split}.json"
    write_coco_json(ann_file, coco)
    return ann_file


def _class_ids(names):
    """CATEGORIES index -> category id (1-based position in ``names``) or None (not drawn);
    None for all four in their own order, the byte-identical default."""
    if tuple(names) == CATEGORIES:
        return None
    return [names.index(c) + 1 if c in names else None for c in CATEGORIES]


def _voc_objects(width, height, anns, names):
    """``writers.voc_xml``'s objects of one image. COCO bbox [x, y, w, h] (0-based, w pixels
    wide) -> VOC's 1-based inclusive pixels: xmin = x + 1, xmax = x + w. Truncated: touching the
    border; difficult: the longer side under ``DIFFICULT_SIDE``."""
    objects = []
    for ann in anns:
        x, y, bw, bh = (int(v) for v in ann["bbox"])
        objects.append((names[ann["category_id"] - 1], (x + 1, y + 1, x + bw, y + bh),
                        int(max(bw, bh) < DIFFICULT_SIDE),
                        int(x == 0 or y == 0 or x + bw == width or y + bh == height)))
    return objects


def _write_voc(out, num_train, num_val, seed, names, background=0):
    """The VOC2007-layout export: train images -> trainval, val images -> test."""
    root = voc_root(out)
    class_ids = _class_ids(names)
    number = 0
    for (_, split_idx), num, list_name in zip(_SPLITS, (num_train, num_val), ("trainval", "test")):
        stems = []
        for _, img, anns in split_images(seed, split_idx, num, background, class_ids):
            number += 1
            stem = f"{number:06d}"
            jpg = root / "JPEGImages" / f"{stem}.jpg"
            if not cv2.imwrite(str(jpg), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise UserError(f"--out {out}: could not write {jpg}")
            height, width = img.shape[:2]
            write_voc_xml(root, stem, width, height, _voc_objects(width, height, anns, names),
                          database="detkit synthetic shapes")
            stems.append(stem)
        write_image_set(root, list_name, stems)
    return root


def _write_yolo(out, num_train, num_val, seed, names, background=0):
    """The Ultralytics-layout export: data.yaml, images/{train,val}, labels/{train,val}. A label
    line is the category index and the pixel box [x, y, w, h] as centre and size normalised by
    the image size."""
    class_ids = _class_ids(names)
    for (split, split_idx), num in zip((("train", 0), ("val", 1)), (num_train, num_val)):
        img_dir, label_dir = yolo_dirs(out, split)
        for img_id, img, anns in split_images(seed, split_idx, num, background, class_ids):
            stem = f"{img_id:012d}"
            if not cv2.imwrite(str(img_dir / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise UserError(f"--out {out}: could not write {img_dir / stem}.jpg")
            if img_id > num and (img_id - num) % 2:
                continue                           # odd background images: no label file at all
            height, width = img.shape[:2]
            boxes = [a["bbox"] for a in anns]
            write_yolo_labels(label_dir / f"{stem}.txt", yolo_lines(
                [a["category_id"] - 1 for a in anns],
                [((x + w / 2) / width, (y + h / 2) / height, w / width, h / height) for x, y, w, h in boxes]))
    return write_data_yaml(out, ("train", "val"), names, "detkit synthetic shapes (tools/make_shapes.py)")


def parse_classes(text):
    """``--classes star,circle`` -> ("star", "circle"); one-line UserError for a bad list."""
    names = tuple(n.strip() for n in str(text).split(","))
    unknown = [n for n in names if n not in CATEGORIES]
    if not names or unknown:
        raise UserError(f"--classes: unknown class {unknown[0] if unknown else ''!r} "
                        f"(choose from {','.join(CATEGORIES)})")
    if len(set(names)) != len(names):
        raise UserError(f"--classes: {text} names a class twice")
    return names


def make_shapes(out, num_train, num_val, seed=0, fmt="coco", classes=None, background=0, video=0,
                frames=VIDEO_FRAMES):
    """Generate the data set under ``out`` in ``fmt`` ("coco", "voc" or "yolo") with the
    categories ``classes`` (names, default all, in CATEGORIES order) and ``background`` images
    without objects per split; returns ``out`` as a Path. ``video`` N > 0 writes N sequences of
    ``frames`` frames per split in the MOT layout instead (``num_train``, ``num_val`` and
    ``background`` unused)."""
    out = Path(out)
    if num_train < 0 or num_val < 0 or background < 0:
        raise UserError(f"--num-train/--num-val/--background must be >= 0, got "
                        f"{num_train}/{num_val}/{background}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt}")
    if video < 0 or (video and (frames < 2 or fmt != "coco")):
        raise UserError(f"--video N writes N >= 0 sequences of --frames >= 2 frames in the MOT layout, with no "
                        f"--format (got --video {video} --frames {frames} --format {fmt})")
    names = CATEGORIES if classes is None else parse_classes(
        classes if isinstance(classes, str) else ",".join(classes))
    try:
        out.mkdir(parents=True, exist_ok=True)
        if fmt == "coco" and not video:
            (out / "annotations").mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create directory ({exc.strerror})") from exc
    if video:
        from detcore.data.shapes_video import write_video

        return write_video(out, video, frames, seed, names)
    if fmt == "voc":
        _write_voc(out, num_train, num_val, seed, names, background)
        return out
    if fmt == "yolo":
        _write_yolo(out, num_train, num_val, seed, names, background)
        return out
    for (split, split_idx), num in zip(_SPLITS, (num_train, num_val)):
        _write_split(out, split, split_idx, num, seed, names, background)
    return out



@cli_entry
def main(argv=None):
    parser = ArgParser(description=__doc__.splitlines()[0], name_tool=False)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=FORMATS, default="coco",
                        help="coco (default), voc (VOCdevkit/VOC2007 layout, train -> trainval, "
                             "val -> test) or yolo (data.yaml, images/, labels/)")
    parser.add_argument("--background", type=int, default=0,
                        help="also N images without objects in each split (default 0)")
    parser.add_argument("--classes", default=None,
                        help=f"comma-separated subset of {','.join(CATEGORIES)} in the wanted "
                             "class order (default: all four)")
    parser.add_argument("--video", type=int, default=0,
                        help="write N synthetic sequences per split in the MOT layout instead (train/, val/)")
    parser.add_argument("--frames", type=int, default=VIDEO_FRAMES,
                        help=f"frames per --video sequence (default {VIDEO_FRAMES})")
    args = parser.parse_args(argv)
    out = make_shapes(args.out, args.num_train, args.num_val, args.seed, args.format, args.classes,
                      args.background, args.video, args.frames)
    if args.video:
        print(f"wrote {args.video} train / {args.video} val sequences of {args.frames} frames (MOT) to {out}")
        return
    where = {"voc": out / "VOCdevkit", "yolo": out / "data.yaml"}.get(args.format, out)
    extra = f" (+{args.background} background each)" if args.background else ""
    print(f"wrote {args.num_train} train / {args.num_val} val images{extra} to {where}")


if __name__ == "__main__":
    main()
