"""What the demos read and what they write, shared by ``tools/demo.py`` (YOLOX checkpoints and the
torch-free ``--onnx`` runtime) and ``ssd/demo.py``: one source type for a file, a folder, a glob,
a video, a stream URL or a camera, read in batches; one writer for drawn images / annotated
video, YOLO txt labels and a COCO results json. Torch-free (numpy, OpenCV, json).

Streams end in two ways, both normal: a file runs out of frames, a live stream (URL, camera)
stops delivering them (the network drops, the camera is unplugged). Either way the loop ends,
one line says how many frames were read, and everything written so far stays valid: txt files
are written per frame, the video is finalised and the json written in ``close()``, which the
demos call in a ``finally``. The json's rows also go, as they come, to
``predictions.json.partial`` (one result per line), so a run killed before ``close()`` keeps what
it did; and the output folder is checked writable before the first image, so a read-only or full
one is one line before inference instead of a traceback after it.
"""
import glob
import json
import os
import sys
import tempfile
import time
from collections import namedtuple
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from accel.errors import UserError
from detcore.boxes import xyxy2xywh
from detcore.data.images import IMAGE_SUFFIXES, is_image
from detcore.deploy.draw import (VideoSink, _native_stderr_silenced, draw, frame_rate, image_files, open_camera,
                                 open_video)
from detcore.files import make_output_dir, replace_atomic, why_not_written

Frame = namedtuple("Frame", "name image index label")
Frame.__doc__ = ("One input: ``name`` the image file's name or ``<stream>_<index>``; ``image`` what the "
                 "source's reader returned (BGR array, or what the demo's own reader gives); ``index`` "
                 "its position in the source, from 0; ``label`` how the demo's lines name it (the "
                 "image's path, 'frame N' from 1 for a stream).")

GLOB_CHARS = "*?["


def _is_url(text):
    return "://" in text


class Source:
    """Frames from ``--path`` (or ``--camid``). ``kind``: 'images' (a file, a folder, a glob),
    'video' (a file), 'stream' (a URL OpenCV opens) or 'camera' (an index). ``read`` turns an
    image path into what the predictor takes (default ``cv2.imread``); None means unreadable,
    and the image is skipped with one stderr line."""

    def __init__(self, kind, files=None, cap=None, label="", flag="--path"):
        self.kind, self.files, self.cap, self.label, self.flag = kind, files, cap, label, flag
        self.frames_read = 0
        self.fps = frame_rate(cap) if cap is not None else None

    @property
    def is_stream(self):
        return self.kind != "images"

    @property
    def stem(self):
        """The name of a stream's outputs: the video file's stem, 'stream' or 'camera'."""
        if self.kind == "video":
            return Path(self.label).stem
        return "camera" if self.kind == "camera" else "stream"

    def frames(self, read=None):
        """Every frame (``Frame``); images that cannot be read are skipped with a line."""
        if self.kind == "images":
            read = read or (lambda p: cv2.imread(str(p)))
            for k, path in enumerate(self.files):
                img = read(path)
                if img is None:
                    print(f"skipped {path}: not a readable image", file=sys.stderr)
                    continue
                self.frames_read += 1
                yield Frame(path.name, img, k, str(path))
            return
        try:
            while True:
                try:
                    ok, frame = self.cap.read()
                except cv2.error:           # a backend that raises instead of returning False
                    ok = False
                if not ok:
                    return
                index = self.frames_read
                self.frames_read += 1
                yield Frame(f"{self.stem}_{index}", frame, index, f"frame {index + 1}")
        finally:
            self.cap.release()

    def batches(self, size, read=None):
        """The frames in lists of ``size`` (the last may be shorter)."""
        it = self.frames(read)
        while True:
            chunk = list(islice(it, size))
            if not chunk:
                return
            yield chunk

    def ended(self):
        """The line said when a stream stops (a file's end, a dropped stream or camera)."""
        if self.kind == "video":
            return f"{self.flag} {self.label}: end of the video after {self.frames_read} frames"
        return (f"{self.flag} {self.label}: the {'camera' if self.kind == 'camera' else 'stream'} stopped "
                f"delivering frames after {self.frames_read} (ended or dropped); what was read is saved")


VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def open_source(path=None, camid=None, flag="--path", kind=None):
    """The ``Source`` of ``path``: an integer (a camera index), a URL with ``://`` (a stream OpenCV
    opens), a glob (``*?[``), a folder (its images, recursively), an image file or a video file;
    ``camid`` (``webcam --camid N``) a camera. ``kind`` 'image' / 'video' (YOLOX's demo types)
    says what a plain path must be. Anything that cannot be opened is one line."""
    if kind == "webcam" or (camid is not None and path is None):
        camid = 0 if camid is None else camid
        return Source("camera", cap=open_camera(camid), label=str(camid), flag="--camid")
    if path is None:
        raise UserError(f"{flag} is required (an image, a folder, a glob, a video, a stream URL or a camera index)")
    text = str(path)
    if text.isdigit():
        return Source("camera", cap=open_camera(int(text)), label=text, flag=flag)
    if _is_url(text):
        with _native_stderr_silenced():
            cap = cv2.VideoCapture(text)
        if not cap.isOpened():
            raise UserError(f"{flag} {text}: OpenCV cannot open the stream (unreachable, or no backend for "
                            "its protocol)")
        return Source("stream", cap=cap, label=text, flag=flag)
    if any(c in text for c in GLOB_CHARS) and not Path(text).exists():
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if is_image(p))
        if not files:
            raise UserError(f"{flag} {text}: the pattern matches no images ({', '.join(IMAGE_SUFFIXES)})")
        return Source("images", files=files, label=text, flag=flag)
    p = Path(text)
    if kind == "video" or (kind is None and (p.is_file() and not is_image(p)
                                             or not p.exists() and p.suffix.lower() in VIDEO_EXT)):
        return Source("video", cap=open_video(p), label=text, flag=flag)
    return Source("images", files=image_files(p), label=text, flag=flag)


def read_annotation_ids(ann_file, flag="--ann"):
    """(file name -> image id, sorted category ids) of a COCO json, read with ``json`` only (the
    torch-free demo has no pycocotools requirement); one line for a file that is not one."""
    path = Path(ann_file)
    try:
        data = json.loads(path.read_text())
        images = {Path(im["file_name"]).name: int(im["id"]) for im in data["images"]}
        cats = sorted(int(c["id"]) for c in data["categories"])
    except FileNotFoundError:
        raise UserError(f"{flag} {path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{flag} {path}: not a COCO annotation json with images and categories "
                        f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return images, cats


class ResultWriter:
    """The demo's outputs under ``out_dir``:

    - ``save_img``: drawn images (``<name>``) or, for a stream, ``<stem>.mp4`` at its rate;
    - ``save_txt``: ``labels/<name stem>.txt``, one ``class cx cy w h [score]`` line per box,
      normalised by the image size (YOLO format; class 0-based: SSD labels minus 1); no file
      for a frame without boxes (as Ultralytics);
    - ``save_json``: ``predictions.json``, a COCO results list (image_id, category_id, bbox xywh,
      score) that pycocotools ``loadRes`` reads. With ``ann_file`` the ids are the json's (image
      by file name, category i = its i-th smallest id, as the data loaders number classes);
      without, an image's id is its file stem when that is a number, else its position, and the
      category the class index (YOLOX) / label (SSD). While the run goes, the rows are appended
      to ``predictions.json.partial`` (JSON lines), renamed away once the json is written.

    ``label_offset``: 1 for SSD (labels count the background), 0 for YOLOX.
    """

    def __init__(self, out_dir, names, save_img=False, save_txt=False, save_conf=False, save_json=False,
                 ann_file=None, label_offset=0, fps=None, stream_stem=None):
        self.out_dir, self.names, self.label_offset = Path(out_dir), names, label_offset
        self.save_img, self.save_txt, self.save_conf, self.save_json = save_img, save_txt, save_conf, save_json
        self.ids, self.cats = read_annotation_ids(ann_file) if ann_file else (None, None)
        self.ann_file = ann_file
        self.results, self.sink, self.txt_count, self.partial = [], None, 0, None
        self.json_path = self.out_dir / "predictions.json" if save_json else None
        if self.saves:
            self._check_writable()
        if save_img and stream_stem is not None:
            self.sink = VideoSink(self.out_dir / f"{stream_stem}.mp4", fps)
        if self.json_path is not None:
            self.partial_path = self.json_path.with_name(self.json_path.name + ".partial")
            try:
                self.partial = open(self.partial_path, "w")
            except OSError as exc:
                raise self._unwritable(self.partial_path, exc) from None

    def _unwritable(self, path, exc):
        return UserError(f"cannot write {path}: {why_not_written(exc)} (choose a writable output "
                         "folder)")

    def _check_writable(self):
        """Create the output folder (and ``labels/``) and one temporary file in it, before any
        image goes through the network: a read-only or full folder found at the end would lose
        every prediction."""
        folders = [self.out_dir] + ([self.out_dir / "labels"] if self.save_txt else [])
        for folder in folders:
            make_output_dir(folder)
            try:
                fd, tmp = tempfile.mkstemp(prefix=".write_test_", dir=folder)
                os.close(fd)
                os.unlink(tmp)
            except OSError as exc:
                raise self._unwritable(folder, exc) from None

    @property
    def saves(self):
        return self.save_img or self.save_txt or self.save_json

    def _image_id(self, frame):
        if self.ids is not None:
            if frame.name not in self.ids:
                raise UserError(f"--ann {self.ann_file} does not list the image {frame.name}")
            return self.ids[frame.name]
        stem = Path(frame.name).stem
        return int(stem) if stem.isdigit() else frame.index

    def add(self, frame, bgr, dets):
        """Record one frame's rows ``dets`` (x1, y1, x2, y2, score, class) on its BGR image."""
        if self.save_txt and len(dets):          # as Ultralytics: no file for a frame without boxes
            self.write_txt(frame, bgr, dets)
        if self.save_json:
            self._write_json(frame, dets)
        if self.save_img:
            self._write_image(frame, self.draw(bgr, dets))

    def draw(self, bgr, dets):
        """The image with its boxes drawn (a tracking writer draws ids and trails instead)."""
        return draw(bgr, dets, self.names)

    def write_txt(self, frame, bgr, dets):
        """``labels/<name stem>.txt`` in the YOLO format (module docstring)."""
        folder = self.out_dir / "labels"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = bgr.shape[:2]
        cls = dets[:, 5].astype(np.int64) - self.label_offset
        xywh = np.stack([(dets[:, 0] + dets[:, 2]) / 2 / w, (dets[:, 1] + dets[:, 3]) / 2 / h,
                         (dets[:, 2] - dets[:, 0]) / w, (dets[:, 3] - dets[:, 1]) / h], axis=1)
        table = np.concatenate([cls[:, None], xywh] + ([dets[:, 4:5]] if self.save_conf else []), axis=1)
        target = folder / f"{Path(frame.name).stem}.txt"
        try:
            np.savetxt(target, table, fmt=["%d"] + ["%.6f"] * (table.shape[1] - 1))
        except OSError as exc:                # e.g. the disk filled up mid-run
            raise self._unwritable(target, exc) from None
        self.txt_count += 1

    def _write_json(self, frame, dets):
        image_id = self._image_id(frame)      # an image the json does not list is an error with or without boxes
        if not len(dets):
            return
        cls = dets[:, 5].astype(np.int64)
        cats = (np.asarray(self.cats)[np.clip(cls - self.label_offset, 0, len(self.cats) - 1)]
                if self.cats is not None else cls)
        boxes = np.round(xyxy2xywh(dets[:, :4]).astype(np.float64), 3)
        scores = np.round(dets[:, 4].astype(np.float64), 5)
        rows = [{"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
                for c, b, s in zip(cats.tolist(), boxes.tolist(), scores.tolist())]
        self.results.extend(rows)
        try:
            self.partial.write("".join(json.dumps(r) + "\n" for r in rows))
            self.partial.flush()
        except OSError as exc:
            raise self._unwritable(self.partial_path, exc) from None

    def _write_image(self, frame, drawn):
        if self.sink is not None:
            self.sink.write(drawn)
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = self.out_dir / frame.name
        if not cv2.imwrite(str(target), drawn):
            raise UserError(f"could not write {target}")

    def close(self):
        """Finalise the video and write the json: what was gathered, however the run ended."""
        if self.sink is not None:
            self.sink.close()
        if self.json_path is not None:
            replace_atomic(self.json_path, json.dumps(self.results).encode())
            if self.partial is not None:
                self.partial.close()
                self.partial_path.unlink(missing_ok=True)   # the json holds it all now

    def summary(self):
        """Lines saying where the outputs went."""
        lines = []
        if self.save_img:
            lines.append(f"saved the annotated video ({self.sink.count} frames) to {self.sink.path}"
                         if self.sink is not None else f"saved drawn images under {self.out_dir}")
        if self.save_txt:
            lines.append(f"saved {self.txt_count} YOLO label files under {self.out_dir / 'labels'}")
        if self.json_path is not None:
            lines.append(f"saved {len(self.results)} detections as COCO results to {self.json_path}")
        return lines


def print_boxes(dets, names):
    """Rows (x1, y1, x2, y2, score, class[, track id]) as one indented line each, the class by
    name (after the track id, when there is one)."""
    for row in dets.tolist():
        x1, y1, x2, y2, score, cls = row[:6]
        track = f"id {int(row[6])} " if len(row) > 6 else ""
        print(f"  {track}{names[int(cls)]} {score:.3f} [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")


def run_source(source, writer, batch_size, predict_batch, names, read=None, as_bgr=None):
    """Both demos' loop: batches of ``batch_size`` frames through ``predict_batch`` (the frames'
    images -> rows each), one line per frame, results to ``writer`` (``as_bgr``: the frame's image
    as the BGR array to draw on, when it is not one already); without a save flag the boxes are
    printed. A stream that stops ends the loop with one line (a camera also on Ctrl-C); the writer
    is closed in any case, so the video, txt files and json written so far are complete."""
    done = 0
    try:
        for batch in source.batches(batch_size, read):
            t0 = time.time()
            results = predict_batch([f.image for f in batch])
            ms = 1000 * (time.time() - t0) / len(batch)
            for frame, dets in zip(batch, results):
                done += 1
                print(f"{frame.label}: {len(dets)} detections in {ms:.1f} ms")
                writer.add(frame, as_bgr(frame.image) if as_bgr else frame.image, dets)
                if not writer.saves:
                    print_boxes(dets, names)
    except KeyboardInterrupt:
        if source.kind != "camera":
            raise
        print(f"stopped after {done} frames (Ctrl-C)")
    finally:
        writer.close()
    if not done:
        if source.is_stream:
            raise UserError(f"{source.flag} {source.label}: no frame could be read from it")
        raise UserError(f"{source.flag} {source.label}: none of its {len(source.files)} image(s) could be read")
    if source.kind in ("stream", "camera"):
        print(source.ended())
    for line in writer.summary():
        print(line)


def add_output_args(parser, txt_class="class", classes_help="keep only these class indices (before NMS)"):
    """The batch, label-file, results-json and class-filter flags both demos (YOLOX's and
    SSD's, PyTorch or torch-free) share; ``txt_class`` / ``classes_help`` say what a class
    number means for that detector."""
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=1,
                        help="images / frames per network call (default 1)")
    parser.add_argument("--save-txt", "--save_txt", dest="save_txt", action="store_true",
                        help=f"write YOLO labels ({txt_class} cx cy w h, normalised) to labels/<image>.txt")
    parser.add_argument("--save-conf", "--save_conf", dest="save_conf", action="store_true",
                        help="--save-txt: add the score as a sixth column")
    parser.add_argument("--save-json", "--save_json", dest="save_json", action="store_true",
                        help="write predictions.json, COCO results (pycocotools loadRes reads it)")
    parser.add_argument("--ann", default=None, metavar="instances.json",
                        help="--save-json: take image and category ids from this COCO annotation file")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help=classes_help)
    parser.add_argument("--agnostic-nms", "--agnostic_nms", dest="agnostic_nms", action="store_true",
                        help="one NMS across classes instead of one per class")


def check_batch_size(value, flag="--batch-size"):
    if value < 1:
        raise UserError(f"{flag} must be >= 1 (got {value})")
    return value
