"""Finding demo images and drawing detections on them, shared by both demos (``tools/demo.py``
for YOLOX, ``ssd/demo.py`` for SSD), so a class has the same colour and label box in either."""
from pathlib import Path

import cv2
import numpy as np

from accel.errors import UserError

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_files(path):
    """``--path``: one image file, or every image under a folder (recursively, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXT)
        if files:
            return files
        raise UserError(f"--path {path} contains no images ({', '.join(IMAGE_EXT)})")
    raise UserError(f"--path {path} does not exist (expected an image file or a folder)")


def colour(cls):
    """A stable, distinct BGR colour per class index."""
    rng = np.random.default_rng(cls + 7)
    return tuple(int(c) for c in rng.integers(60, 255, size=3))


def draw(img, dets, names):
    """Boxes with 'name score' labels; ``dets`` rows are (x1,y1,x2,y2,score,cls) in image pixels."""
    for x1, y1, x2, y2, score, cls in dets.tolist():
        c = colour(int(cls))
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(img, p1, p2, c, 2)
        text = f"{names[int(cls)]} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(p1[1] - th - 4, 0)
        cv2.rectangle(img, (p1[0], top), (p1[0] + tw + 2, top + th + 4), c, -1)
        cv2.putText(img, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return img
