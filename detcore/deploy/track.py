"""Detector + tracker over a stream of frames: what ``track()``, ``tools/demo.py video --track``
and ``tools/eval_track.py`` share. Torch-free: ``detect_batch`` is any callable that maps a list
of BGR images to rows ``(x1, y1, x2, y2, score, class)`` per image (the ONNX/OpenVINO
``Detector.detect_batch`` or the PyTorch demo's ``Predictor.predict_batch``)."""
from itertools import islice

import numpy as np

from detcore.deploy.tracker import ByteTracker

# ByteTrack's detector settings for tracking (its MOT evaluation): keep low-score boxes, which the
# second association uses, and a loose NMS, since crowded objects overlap
TRACK_CONF, TRACK_NMS = 0.01, 0.7


def add_tracker_args(parser):
    """The tracker's flags, with the reference ByteTrack's defaults (``ByteTracker``)."""
    group = parser.add_argument_group("tracking (ByteTrack)")
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
    return parser


def tracker_from_args(args, frame_rate=30):
    return ByteTracker(track_thresh=args.track_thresh, track_buffer=args.track_buffer,
                       match_thresh=args.match_thresh, frame_rate=frame_rate, fuse_score=not args.mot20,
                       class_agnostic=args.class_agnostic)


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
