"""Synthetic COCO-format detection data: coloured shapes on textured, noisy backgrounds.

COCO cannot be downloaded here, so the demo and the tests train and evaluate on this set through
the very loaders real COCO uses. Every image is drawn from its own numpy Generator seeded with
(seed, split, index), so the output is byte-identical for a given seed and does not depend on the
order or number of images generated before it.

Usage: python tools/make_shapes.py --out DIR --num-train N --num-val M --seed S
Writes DIR/{train2017,val2017}/*.jpg and DIR/annotations/instances_{train,val}2017.json.
"""
import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accel.errors import UserError, cli_entry  # noqa: E402

CATEGORIES = ("circle", "rectangle", "triangle", "star")
SIZE_RANGE = (256, 480)        # image width and height are drawn independently from this range
MIN_OBJ = 16                   # smallest shape extent in pixels (keeps the task learnable)
MAX_OBJECTS = 6                # objects per image are drawn from 0..MAX_OBJECTS
MIN_VISIBLE = 0.3              # drop a shape when less than this fraction of it stays visible
MIN_BOX_SIDE = 4               # drop a visible remnant thinner than this (pixels)
JPEG_QUALITY = 92
_SPLITS = (("train2017", 0), ("val2017", 1))


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


def _draw_objects(rng, img, h, w, base):
    """Draw 0..MAX_OBJECTS shapes; later ones occlude earlier ones. Returns (owner map, classes, areas)."""
    owner = np.full((h, w), 255, np.uint8)   # index of the shape that owns each pixel
    classes, full_areas = [], []
    n = int(rng.integers(0, MAX_OBJECTS + 1))
    max_ext = max(MIN_OBJ + 1, min(h, w) // 2)
    for k in range(n):
        cls = int(rng.integers(0, len(CATEGORIES)))
        ext = float(np.exp(rng.uniform(np.log(MIN_OBJ), np.log(max_ext))))
        r = ext / 2
        cx, cy = rng.uniform(r * 0.4, w - r * 0.4), rng.uniform(r * 0.4, h - r * 0.4)
        colour = tuple(float(c) for c in _shape_colour(rng, base))
        if cls == 0:
            centre, rad = (int(round(cx)), int(round(cy))), int(round(r))
            cv2.circle(img, centre, rad, colour, -1, cv2.LINE_AA)
            cv2.circle(owner, centre, rad, k, -1, cv2.LINE_8)
            area = np.pi * r * r
        else:
            pts = _polygon(rng, cls, cx, cy, r)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
            cv2.fillPoly(owner, [pts], k, cv2.LINE_8)
            area = cv2.contourArea(pts.astype(np.float32))
        classes.append(cls + 1)
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
        mask = owner == k
        ys = np.flatnonzero(mask.any(axis=1))
        xs = np.flatnonzero(mask.any(axis=0))
        bw, bh = xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0]
        if min(bw, bh) < MIN_BOX_SIDE:
            continue
        anns.append({"category_id": cls, "bbox": [float(xs[0]), float(ys[0]), float(bw), float(bh)],
                     "area": float(counts[k])})
    return anns


def render_image(seed, split_idx, index):
    """Render one image: returns (BGR uint8 image, list of partial COCO annotations)."""
    rng = np.random.default_rng([seed, split_idx, index])
    w, h = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
    bg, base = _background(rng, h, w)
    img = np.clip(bg, 0, 255).astype(np.uint8)   # 8-bit so cv2 anti-aliases the shape edges
    owner, classes, full_areas = _draw_objects(rng, img, h, w, base)
    noisy = img + rng.normal(0.0, rng.uniform(3, 10), size=img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8), _visible_boxes(owner, classes, full_areas)


def _write_split(out, split, split_idx, num, seed):
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        img_id = i + 1
        img, anns = render_image(seed, split_idx, i)
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
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CATEGORIES)],
    }
    ann_file = out / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps(coco))
    return ann_file


def make_shapes(out, num_train, num_val, seed=0):
    """Generate the data set under ``out``; returns ``out`` as a Path."""
    out = Path(out)
    if num_train < 0 or num_val < 0:
        raise UserError(f"--num-train/--num-val must be >= 0, got {num_train}/{num_val}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    try:
        (out / "annotations").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create directory ({exc.strerror})") from exc
    for (split, split_idx), num in zip(_SPLITS, (num_train, num_val)):
        _write_split(out, split, split_idx, num, seed)
    return out


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (COCO layout)")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_shapes(args.out, args.num_train, args.num_val, args.seed)
    print(f"wrote {args.num_train} train / {args.num_val} val images to {out}")


if __name__ == "__main__":
    main()
