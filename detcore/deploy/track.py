"""Detector + tracker over a stream of frames: what ``track()``, ``tools/demo.py video --track``
and ``tools/eval_track.py`` share. Torch-free: ``detect_batch`` is any callable that maps a list
of BGR images to rows ``(x1, y1, x2, y2, score, class)`` per image (the ONNX/OpenVINO
``Detector.detect_batch`` or the PyTorch demo's ``Predictor.predict_batch``)."""
from itertools import islice

import numpy as np

from detcore.boxes import xyxy2xywh
from detcore.data.writers import mot_result_lines
from detcore.deploy.draw import draw_tracks
from detcore.deploy.media import ResultWriter
from detcore.deploy.tracker import ByteTracker

# ByteTrack's detector settings for tracking (its MOT evaluation): keep low-score boxes, which the
# second association uses, and a loose NMS, since crowded objects overlap
TRACK_CONF, TRACK_NMS = 0.01, 0.7


def add_tracker_args(parser, track_flag=False):
    """The tracker's flags, with the reference ByteTrack's defaults (``ByteTracker``); with
    ``track_flag`` also the demos' ``--track`` that turns tracking on."""
    group = parser.add_argument_group("tracking (ByteTrack)")
    if track_flag:
        group.add_argument("--track", action="store_true",
                           help="follow objects through the frames: ids and trails drawn, --save-txt writes "
                                "one MOTChallenge result file (labels/<video>.txt)")
    group.add_argument("--track-thresh", "--track_thresh", dest="track_thresh", type=float, default=0.5,
                       help="detections above start and extend tracks; above 0.1 and below this only "
                            "extend them (default 0.5)")
    group.add_argument("--track-buffer", "--track_buffer", dest="track_buffer", type=int, default=30,
                       help="frames (at 30 fps) a lost track waits to be found again (default 30)")
    group.add_argument("--match-thresh", "--match_thresh", dest="match_thresh", type=float, default=0.8,
                       help="IoU-distance limit of the first association (default 0.8)")
    group.add_argument("--mot20", action="store_true",
                       help="do not weigh the IoU by the detection score (the reference's --mot20)")
    group.add_argument("--class-agnostic", "--class_agnostic", dest="class_agnostic", action="store_true",
                       help="match detections to tracks of any class (default: a track keeps its class)")
    group.add_argument("--track-boxes", dest="track_boxes", choices=("kalman", "detection"), default="kalman",
                       help="report a track's Kalman state (the reference's, default) or the box of the "
                            "detection it matched last")
    return parser


def tracker_from_args(args, frame_rate=30):
    return ByteTracker(track_thresh=args.track_thresh, track_buffer=args.track_buffer,
                       match_thresh=args.match_thresh, frame_rate=frame_rate, fuse_score=not args.mot20,
                       class_agnostic=args.class_agnostic, output_boxes=args.track_boxes)


def track(frames, detect_batch, tracker=None, batch_size=1):
    """Yield ``(frame image, Tracks)`` for each BGR image of ``frames`` (any iterable: a list, a
    video's frames), running ``detect_batch`` on ``batch_size`` frames at a time and the tracker
    (a ``ByteTracker``; a fresh one with the reference's defaults when None) frame by frame."""
    tracker = ByteTracker() if tracker is None else tracker
    frames = iter(frames)
    while True:
        batch = list(islice(frames, max(int(batch_size), 1)))
        if not batch:
            return
        for img, rows in zip(batch, detect_batch(batch)):
            rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
            yield img, tracker.update(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64))


def tracked(detect_batch, tracker):
    """``detect_batch`` whose rows carry the track id: per image ``(x1, y1, x2, y2, score, class,
    id)`` of the confirmed tracks (the tracker's boxes, not the detections'), frame by frame."""
    def detect_and_track(images):
        out = []
        for rows in detect_batch(images):
            rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
            t = tracker.update(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64))
            out.append(np.column_stack([t.boxes, t.scores, t.classes, t.ids]).reshape(-1, 7))
        return out
    return detect_and_track


class TrackWriter(ResultWriter):
    """The demo's outputs for tracked frames (rows with an id column, ``tracked``): boxes labelled
    with their track id and a trail of the last ``TRAIL`` centres; ``--save-txt`` writes ONE
    MOTChallenge result file for the whole source, ``labels/<stem>.txt`` (``frame, id, x, y, w,
    h, score, -1, -1, -1``, frames from 1), line by line as frames come, so a stream that drops or a
    Ctrl-C keeps every frame done; ``--save-json`` as without tracking."""

    TRAIL = 30

    def __init__(self, out_dir, names, stem, **kwargs):
        super().__init__(out_dir, names, **kwargs)
        self.frame_no, self.trails, self.mot_rows = 0, {}, 0
        self.mot_path = self.out_dir / "labels" / f"{stem}.txt"
        if self.save_txt:
            self.mot_path.write_text("")

    def add(self, frame, bgr, dets):
        self.frame_no += 1
        centres = (dets[:, :2] + dets[:, 2:4]) / 2
        for track_id, c in zip(dets[:, 6].astype(np.int64).tolist(), centres):
            self.trails.setdefault(track_id, []).append((self.frame_no, c))
        for track_id in list(self.trails):       # a trail fades once its track is gone that long
            points = [p for p in self.trails[track_id] if self.frame_no - p[0] < self.TRAIL]
            if points:
                self.trails[track_id] = points
            else:
                del self.trails[track_id]
        super().add(frame, bgr, dets)

    def draw(self, bgr, dets):
        return draw_tracks(bgr, dets, self.names, {k: [c for _, c in v] for k, v in self.trails.items()})

    def write_txt(self, frame, bgr, dets):
        text = "".join(mot_result_lines([self.frame_no] * len(dets), dets[:, 6], xyxy2xywh(dets[:, :4]), dets[:, 4]))
        try:
            with open(self.mot_path, "a") as f:
                f.write(text)
        except OSError as exc:
            raise self._unwritable(self.mot_path, exc) from None
        self.mot_rows += len(dets)

    def summary(self):
        lines = [line for line in super().summary() if "YOLO label files" not in line]
        if self.save_txt:
            lines.append(f"saved {self.mot_rows} track rows of {self.frame_no} frames (MOTChallenge) to "
                         f"{self.mot_path}")
        return lines


def demo_writer(args, source, predict_batch, out_dir, names, **options):
    """(writer, predict_batch) of a demo run: a ``ResultWriter`` and the detector as they are, or
    with ``--track`` a ``TrackWriter`` and the detector followed by a tracker at the source's rate."""
    stream_stem = source.stem if source.is_stream else None
    if not getattr(args, "track", False):
        return ResultWriter(out_dir, names, fps=source.fps, stream_stem=stream_stem, **options), predict_batch
    tracker = tracker_from_args(args, frame_rate=source.fps or 30)
    writer = TrackWriter(out_dir, names, stream_stem or "tracks", fps=source.fps, stream_stem=stream_stem,
                         **options)
    return writer, tracked(predict_batch, tracker)
