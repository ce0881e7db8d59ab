"""Demo inputs and outputs shared by the demos (``tools/demo.py`` for YOLOX checkpoints and any
exported .onnx, ``ssd/demo.py`` for SSD checkpoints): finding images, opening a video or a camera,
writing an annotated video, and drawing detections, so a class has the same colour and label box
in every demo. Torch-free: the onnxruntime demo uses it without PyTorch installed."""
import contextlib
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from accel.errors import UserError
from detcore.data.images import IMAGE_SUFFIXES, images_under


def image_files(path):
    """``--path``: one image file, or every image under a folder (recursively, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = images_under(path)
        if files:
            return files
        raise UserError(f"--path {path} contains no images ({', '.join(IMAGE_SUFFIXES)})")
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


def draw_tracks(img, rows, names, trails=None):
    """Tracked boxes: rows (x1, y1, x2, y2, score, class, track id), each in its track's colour
    with an 'id name score' label, and ``trails`` {id: [centre (x, y), ...]} as lines."""
    for track_id, points in (trails or {}).items():
        if len(points) > 1:
            pts = np.round(np.asarray(points)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(img, [pts], False, colour(int(track_id)), 2, cv2.LINE_AA)
    for x1, y1, x2, y2, score, cls, track_id in rows.tolist():
        _labelled_box(img, (x1, y1, x2, y2), f"{int(track_id)} {names[int(cls)]} {score:.2f}",
                      colour(int(track_id)), 2)
    return img


# error analysis colours (BGR): ground truth green (found) or yellow (missed), predictions blue
# (true positive) or red (false positive)
ERROR_COLOURS = {"GT": (60, 180, 60), "FN": (0, 215, 255), "TP": (220, 120, 20), "FP": (40, 40, 230)}


def _labelled_box(img, box, text, c, thickness):
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(img, (x1, y1), (x2, y2), c, thickness)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    top = max(y1 - th - 4, 0)
    cv2.rectangle(img, (x1, top), (x1 + tw + 2, top + th + 4), c, -1)
    cv2.putText(img, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)


def draw_errors(img, gt_boxes, gt_cls, gt_found, det_boxes, det_cls, det_scores, det_tp, names):
    """Ground truth and predictions of one image for error analysis (xyxy pixels): ground truth
    labelled "GT" when a prediction found it, "FN" when missed; predictions "TP" / "FP" with
    their score; a legend in the corner says which colour is which."""
    for box, cls, found in zip(gt_boxes, gt_cls, gt_found):
        kind = "GT" if found else "FN"
        _labelled_box(img, box, f"{kind} {names[int(cls)]}", ERROR_COLOURS[kind], 1 if found else 2)
    for box, cls, score, tp in zip(det_boxes, det_cls, det_scores, det_tp):
        kind = "TP" if tp else "FP"
        _labelled_box(img, box, f"{kind} {names[int(cls)]} {score:.2f}", ERROR_COLOURS[kind], 2 if not tp else 1)
    bottom = img.shape[0] - 4 - 14 * len(ERROR_COLOURS)
    for i, (kind, c) in enumerate(ERROR_COLOURS.items()):
        y = bottom + 14 * i
        cv2.rectangle(img, (4, y), (14, y + 10), c, -1)
        cv2.putText(img, kind, (18, y + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, c, 1, cv2.LINE_AA)
    return img


VIDEO_FOURCC = "mp4v"        # upstream YOLOX's demo writes mp4v at the source's fps and frame size
FALLBACK_FPS = 30.0          # what a camera that reports no rate is recorded at


@contextlib.contextmanager
def _native_stderr_silenced():
    """OpenCV and FFmpeg print their own lines on fd 2 when a file or camera does not open ("moov
    atom not found", "can't open camera by index"), whatever their log settings once FFmpeg is
    initialised; the demo says what went wrong in one line instead, so fd 2 points at the null
    device while a capture opens."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def open_video(path):
    """``video --path FILE``: the opened ``cv2.VideoCapture``, or one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--path {path} does not exist (expected a video file)")
    with _native_stderr_silenced():
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError(f"--path {path}: OpenCV cannot open it as a video (not a video file, or no "
                        "decoder for its format)")
    return cap


def open_camera(camid):
    """``webcam --camid N``: the opened camera, or one line saying there is none."""
    with _native_stderr_silenced():
        cap = cv2.VideoCapture(camid)
    if not cap.isOpened():
        raise UserError(f"--camid {camid}: no camera could be opened (no /dev/video{camid} on this "
                        "machine, or it is in use)")
    return cap


def frame_rate(cap):
    """The stream's frames per second, FALLBACK_FPS where it reports none (many cameras)."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if fps and fps > 0 and fps == fps else FALLBACK_FPS


def frames(cap):
    """The stream's frames (BGR) until it ends; the capture is released afterwards."""
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


class VideoSink:
    """An annotated video at ``path``: mp4v at ``fps``, sized by the first frame written (the
    source's size, as upstream's demo). ``close()`` finalises the file; use it as a context manager."""

    def __init__(self, path, fps):
        self.path, self.fps, self.writer, self.count = Path(path), fps, None, 0

    def write(self, frame):
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), self.fps, (w, h))
            if not self.writer.isOpened():
                raise UserError(f"cannot write the video {self.path} (OpenCV has no {VIDEO_FOURCC} encoder here)")
        self.writer.write(frame)
        self.count += 1

    def close(self):
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
