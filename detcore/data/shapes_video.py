"""Synthetic video for tracking: ``make_shapes(..., video=N)`` / ``tools/make_shapes.py --video N``.

N synthetic sequences per split in the MOTChallenge layout (``detcore.data.mot``):
DIR/{train,val}/shapes-01/{seqinfo.ini, img1/000001.jpg..., gt/gt.txt},
``--frames`` frames each (default 30, 10 fps, 256-352 x 192-288 px). Each shape is a track: the
same shape, size and colour in every frame, moving with a constant velocity (3-8 px a frame) plus
Gaussian jitter (0.5 px), so tracks cross (the first two pass through one point at one frame),
enter and leave the frame; later tracks occlude earlier ones. A gt row is the shape's full box,
clipped to the frame (MOT's boxes cover occluded parts too), its track id, its class (the category
id, named in seqinfo.ini's ``[Classes]``) and visibility (visible pixels / full area); a shape
less than ``MIN_VISIBLE`` visible is written with consider 0 (an ignore region), one with less
than ``MIN_BOX_SIDE`` px inside the frame not at all. ``video_sequence`` yields the same rows.
The shapes, colours and backgrounds are those of ``detcore.data.shapes``; the files are written by
``detcore.data.writers``."""
import cv2
import numpy as np

from accel.errors import UserError
from detcore.data.shapes import (CATEGORIES, JPEG_QUALITY, MIN_BOX_SIDE, MIN_OBJ, MIN_VISIBLE, VIDEO_FRAMES,
                                 _background, _class_ids, _polygon, _shape_colour)
from detcore.data.writers import mot_frame_name, mot_gt_lines, mot_sequence, write_mot_gt, write_seqinfo

VIDEO_FPS = 10
VIDEO_W, VIDEO_H = (256, 352), (192, 288)
VIDEO_TRACKS = (3, 6)          # tracks per sequence
VIDEO_SPEED = (3.0, 8.0)       # pixels per frame
VIDEO_JITTER = 0.5             # pixels, per frame and axis


def _tracks(rng, h, w, base, frames, class_ids):
    """The tracks of one sequence: every random draw made for each, in order, whether or not its
    category is kept (``class_ids``, as ``_draw_objects``); the first two cross at one point."""
    tracks = []
    for k in range(int(rng.integers(VIDEO_TRACKS[0], VIDEO_TRACKS[1] + 1))):
        cls = int(rng.integers(0, len(CATEGORIES)))
        r = float(np.exp(rng.uniform(np.log(MIN_OBJ), np.log(min(h, w) / 3)))) / 2
        colour = tuple(float(c) for c in _shape_colour(rng, base))
        offsets = None if cls == 0 else _polygon(rng, cls, 0.0, 0.0, r)
        speed, angle = rng.uniform(*VIDEO_SPEED), rng.uniform(0, 2 * np.pi)
        target = rng.uniform([r, r], [w - r, h - r])
        t_mid = rng.uniform(0, frames - 1)
        if k == 1:                              # the second track crosses the first
            target, t_mid = tracks[0]["target"], tracks[0]["t_mid"]
        cat_id = cls + 1 if class_ids is None else class_ids[cls]
        tracks.append({"id": k + 1, "cls": cls, "cat": cat_id, "r": r, "colour": colour, "offsets": offsets,
                       "v": speed * np.array([np.cos(angle), np.sin(angle)]), "target": target, "t_mid": t_mid})
    return tracks


def _draw_track(img, owner, k, track, centre):
    """Draw ``track`` at ``centre`` as shape ``k`` of the owner map; returns (its full box
    [x0, y0, x1, y1], unclipped, and its full area)."""
    c = np.round(centre).astype(np.int32)
    if track["cls"] == 0:
        rad = int(round(track["r"]))
        cv2.circle(img, (int(c[0]), int(c[1])), rad, track["colour"], -1, cv2.LINE_AA)
        cv2.circle(owner, (int(c[0]), int(c[1])), rad, k, -1, cv2.LINE_8)
        return [c[0] - rad, c[1] - rad, c[0] + rad + 1, c[1] + rad + 1], np.pi * rad * rad
    pts = track["offsets"] + c
    cv2.fillPoly(img, [pts], track["colour"], cv2.LINE_AA)
    cv2.fillPoly(owner, [pts], k, cv2.LINE_8)
    lo, hi = pts.min(axis=0), pts.max(axis=0) + 1
    return [lo[0], lo[1], hi[0], hi[1]], cv2.contourArea(pts.astype(np.float32))


def video_sequence(seed, split_idx, index, frames=VIDEO_FRAMES, class_ids=None):
    """(width, height, frames iterator) of one synthetic sequence; the iterator yields (frame
    1.., BGR image, rows), a row (track id, category id, [x, y, w, h], visibility, consider)
    per track annotated in that frame (module docstring). Its own seed stream ([seed, 4 + split,
    index]), so sequences are independent of each other and of the image sets."""
    rng = np.random.default_rng([seed, 4 + split_idx, index])
    w, h = int(rng.integers(VIDEO_W[0], VIDEO_W[1] + 1)), int(rng.integers(VIDEO_H[0], VIDEO_H[1] + 1))
    bg, base = _background(rng, h, w)
    sigma = rng.uniform(3, 10)
    tracks = _tracks(rng, h, w, base, frames, class_ids)

    def frames_of():
        for t in range(frames):
            img = np.clip(bg, 0, 255).astype(np.uint8)
            owner = np.full((h, w), 255, np.uint8)
            drawn = []
            for tr in tracks:
                centre = tr["target"] + tr["v"] * (t - tr["t_mid"]) + rng.normal(0.0, VIDEO_JITTER, 2)
                if tr["cat"] is not None:
                    drawn.append((tr, *_draw_track(img, owner, len(drawn), tr, centre)))
            counts = np.bincount(owner.ravel(), minlength=256)
            rows = []
            for k, (tr, (x0, y0, x1, y1), full) in enumerate(drawn):
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
                if min(x1 - x0, y1 - y0) < MIN_BOX_SIDE:
                    continue                     # (almost) outside the frame: not annotated
                vis = min(1.0, counts[k] / max(full, 1.0))
                rows.append((tr["id"], tr["cat"], [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                             round(vis, 4), int(vis >= MIN_VISIBLE)))
            noisy = img + rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
            yield t + 1, np.clip(noisy, 0, 255).astype(np.uint8), rows

    return w, h, frames_of()


def write_video(out, num, frames, seed, names):
    """``num`` sequences per split in the MOT layout (``detcore.data.mot``): train/ and val/."""
    class_ids = _class_ids(names)
    classes = list(enumerate(names, 1))
    for split, split_idx in (("train", 0), ("val", 1)):
        for i in range(num):
            folder = mot_sequence(out, split, f"shapes-{i + 1:02d}")
            w, h, seq = video_sequence(seed, split_idx, i, frames, class_ids)
            lines = []
            for frame, img, rows in seq:
                path = folder / "img1" / mot_frame_name(frame)
                if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                    raise UserError(f"--out {out}: could not write {path}")
                if rows:
                    tid, cat, box, vis, consider = zip(*rows)
                    lines += mot_gt_lines([frame] * len(rows), tid, box, consider, cat, vis)
            write_seqinfo(folder, frames, w, h, VIDEO_FPS, ".jpg", classes)
            write_mot_gt(folder, lines)
    return out
