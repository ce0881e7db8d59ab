"""Trackers side by side on the same detections: HOTA / IDF1 / MOTA and time per frame of detkit's
``ByteTracker`` against the reference ByteTrack and peers, one JSON line per measurement.

    python bench/track.py [--reference /tmp/peers/bytetrack_ref --reference-path /tmp/peers/site]
                          [--ultralytics /tmp/peers/ul] [--roboflow /tmp/peers/rf] [--rounds 3]

- Accuracy: each synthetic stream of tests/tracking_streams.py (crossings, occlusions, objects
  entering and leaving, low-score and false detections) with its ground truth, scored by TrackEval
  (``detcore.evaluation.tracking``). Every tracker runs class-agnostic with ByteTrack's
  thresholds (high 0.5, low 0.1, new track 0.6, match 0.8, buffer 30 at the stream's frame rate),
  the reference's defaults, passed explicitly to each peer.
- Speed: ``ms_per_frame`` of ``update`` alone (no detector), the median of ``--rounds`` runs over
  a 100-frame stream with 10, 100 and 500 objects per frame.

Peers are optional and live outside the repository (installed into side folders, as the other
benchmarks' peers): the authors' ByteTrack (``--reference``: a folder holding its
``yolox/tracker/``, see bench/track_reference.py; ``--reference-path``: where ``lap`` and
``cython_bbox`` are) and Ultralytics' ``BYTETracker`` (``--ultralytics``: a folder holding the
``ultralytics`` package, e.g. ``pip install --no-deps --target /tmp/peers/ul ultralytics``) and Roboflow's
``trackers`` ByteTrackTracker (``--roboflow``: ``pip install --target /tmp/peers/rf trackers``). A peer
that is not given or does not import is reported as ``skipped`` with the reason. Run it alone:
other processes on the machine distort the times.
"""
import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cpu_name  # noqa: E402
from detcore.deploy.tracker import ByteTracker  # noqa: E402
from detcore.evaluation import tracking  # noqa: E402

THRESH = dict(high=0.5, low=0.1, new=0.6, match=0.8, buffer=30)


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STREAMS = _module("tracking_streams", ROOT / "tests" / "tracking_streams.py")


class Ours:
    name = "detkit"

    def __init__(self, frame_rate, fuse_score=True, output_boxes="kalman"):
        self.t = ByteTracker(track_thresh=THRESH["high"], low_thresh=THRESH["low"], match_thresh=THRESH["match"],
                             track_buffer=THRESH["buffer"], frame_rate=frame_rate, fuse_score=fuse_score,
                             class_agnostic=True, output_boxes=output_boxes)

    def update(self, boxes, scores, classes):
        out = self.t.update(boxes, scores, classes)
        return out.ids, out.boxes


class Reference:
    """The authors' BYTETracker (``yolox/tracker/byte_tracker.py``), loaded by track_reference."""
    name = "bytetrack_reference"

    def __init__(self, bt, frame_rate, fuse_score=True):
        args = argparse.Namespace(track_thresh=THRESH["high"], track_buffer=THRESH["buffer"],
                                  match_thresh=THRESH["match"], mot20=not fuse_score)
        bt.BaseTrack._count = 0
        self.t = bt.BYTETracker(args, frame_rate=frame_rate)

    def update(self, boxes, scores, classes):
        dets = np.column_stack([boxes, scores]) if len(boxes) else np.zeros((0, 5))
        out = self.t.update(dets, (1, 1), (1, 1))
        return (np.array([t.track_id for t in out], int),
                np.array([t.tlbr for t in out], float).reshape(-1, 4))


class _UlDets:
    """What Ultralytics' BYTETracker reads of a Results object: conf, cls, xywh (centre), masks."""

    def __init__(self, xyxy, conf, cls):
        self.xyxy, self.conf, self.cls = xyxy, conf, cls.astype(float)
        self.xywh = np.column_stack([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]])

    def __len__(self):
        return len(self.conf)

    def __getitem__(self, index):
        return _UlDets(self.xyxy[index], self.conf[index], self.cls[index])


class Ultralytics:
    name = "ultralytics_bytetracker"

    def __init__(self, bytetracker, frame_rate, fuse_score=True):
        # its buffer is in frames (no frame-rate scaling): give it the reference's lost time
        args = argparse.Namespace(track_high_thresh=THRESH["high"], track_low_thresh=THRESH["low"],
                                  new_track_thresh=THRESH["new"], track_buffer=int(frame_rate / 30 * THRESH["buffer"]),
                                  match_thresh=THRESH["match"], fuse_score=fuse_score)
        self.t = bytetracker(args)

    def update(self, boxes, scores, classes):
        out = self.t.update(_UlDets(boxes, scores, classes))
        out = np.asarray(out, float).reshape(-1, 8)
        return out[:, 4].astype(int), out[:, :4]


class Roboflow:
    """Roboflow ``trackers``' ByteTrackTracker on ``supervision`` Detections."""
    name = "roboflow_trackers"

    def __init__(self, module, sv, frame_rate, fuse_score=True):
        # the reference's thresholds in its terms: high/low split 0.5, new tracks from 0.6,
        # match below IoU distance 0.8 (IoU above 0.2), 30 frames at 30 fps
        self.sv = sv
        self.t = module.ByteTrackTracker(lost_track_buffer=THRESH["buffer"], frame_rate=frame_rate,
                                         track_activation_threshold=THRESH["new"],
                                         high_conf_det_threshold=THRESH["high"],
                                         minimum_iou_threshold=1 - THRESH["match"])

    def update(self, boxes, scores, classes):
        out = self.t.update(self.sv.Detections(xyxy=boxes.reshape(-1, 4), confidence=scores,
                                               class_id=classes.astype(int)))
        keep = out.tracker_id >= 0 if out.tracker_id is not None else np.zeros(len(out), bool)
        return out.tracker_id[keep].astype(int), out.xyxy[keep]


def peers(args):
    """[(factory(frame_rate, fuse_score), name)] of the trackers that load; skipped ones printed."""
    found = [(lambda fr, fuse: Ours(fr, fuse), Ours.name),
             (lambda fr, fuse: Ours(fr, fuse, "detection"), "detkit_detection_boxes")]
    if args.reference:
        try:
            sys.path[:0] = [str(args.reference)] + [str(p) for p in args.reference_path]
            ref = _module("track_reference", ROOT / "bench" / "track_reference.py")
            bt = ref.load_reference(args.reference, args.reference_path)
            found.append((lambda fr, fuse: Reference(bt, fr, fuse), Reference.name))
        except Exception as exc:  # noqa: BLE001 -- a peer that does not load is reported, not fatal
            print(json.dumps({"tracker": Reference.name, "skipped": f"{type(exc).__name__}: {exc}"}))
    else:
        print(json.dumps({"tracker": Reference.name, "skipped": "no --reference"}))
    if args.ultralytics:
        try:
            sys.path.append(str(args.ultralytics))
            from ultralytics.trackers.byte_tracker import BYTETracker
            found.append((lambda fr, fuse: Ultralytics(BYTETracker, fr, fuse), Ultralytics.name))
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"tracker": Ultralytics.name, "skipped": f"{type(exc).__name__}: {exc}"}))
    else:
        print(json.dumps({"tracker": Ultralytics.name, "skipped": "no --ultralytics"}))
    if args.roboflow:
        try:
            sys.path.append(str(args.roboflow))
            import supervision
            import trackers
            found.append((lambda fr, fuse: Roboflow(trackers, supervision, fr, fuse), Roboflow.name))
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"tracker": Roboflow.name, "skipped": f"{type(exc).__name__}: {exc}"}))
    else:
        print(json.dumps({"tracker": Roboflow.name, "skipped": "no --roboflow"}))
    return found


def run(tracker, stream):
    """Result rows [frame, id, x, y, w, h, score] of a tracker over a stream, and its seconds."""
    rows, seconds = [], 0.0
    for f, (boxes, scores, classes) in enumerate(stream, 1):
        t0 = time.perf_counter()
        ids, xyxy = tracker.update(boxes, scores, classes)
        seconds += time.perf_counter() - t0
        for i, b in zip(ids, xyxy):
            rows.append([f, i, b[0], b[1], b[2] - b[0], b[3] - b[1], 1.0])
    return np.asarray(rows, float).reshape(-1, 7), seconds


def accuracy(found, cpu):
    for name, spec in STREAMS.STREAMS.items():
        truth = []
        stream = STREAMS.make_stream(**spec["stream"], truth=truth)
        gt = np.asarray(truth, float)
        frame_rate, fuse = spec["tracker"]["frame_rate"], spec["tracker"]["fuse_score"]
        for factory, tname in found:
            rows, secs = run(factory(frame_rate, fuse), stream)
            s = tracking.evaluate({name: (gt, rows, len(stream))})[name]
            print(json.dumps({"bench": "track_accuracy", "stream": name, "tracker": tname, "frames": len(stream),
                              **{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()},
                              "ms_per_frame": round(1000 * secs / len(stream), 3), "cpu": cpu}))


def speed(found, rounds, cpu):
    for objects in (10, 100, 500):
        stream = STREAMS.make_stream(seed=objects, frames=100, objects=objects, crossings=objects // 10,
                                     entering=objects // 10, occlusion_prob=0.3, low_prob=0.15,
                                     false_positives=objects / 20, classes=3)
        for factory, tname in found:
            ms = [1000 * run(factory(30, True), stream)[1] / len(stream) for _ in range(rounds)]
            print(json.dumps({"bench": "track_speed", "objects": objects, "tracker": tname,
                              "ms_per_frame": round(statistics.median(ms), 3),
                              "ms_per_frame_rounds": [round(m, 3) for m in ms], "cpu": cpu}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="folder holding the authors' yolox/tracker/")
    ap.add_argument("--reference-path", type=Path, nargs="*", default=[],
                    help="folders with the reference's packages (lap, cython_bbox)")
    ap.add_argument("--ultralytics", type=Path, help="folder holding the ultralytics package")
    ap.add_argument("--roboflow", type=Path, help="folder holding Roboflow's trackers (and supervision)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--figure", type=Path, help="only draw docs/tracking.md's picture to this PNG")
    args = ap.parse_args(argv)
    if args.figure:
        return figure(args.figure)
    cpu = cpu_name()
    found = peers(args)
    accuracy(found, cpu)
    speed(found, args.rounds, cpu)



def figure(path, seed=3, frames=(1, 10, 20, 30)):
    """docs/tracking.md's picture: a synthetic sequence (``make_shapes --video``) tracked from its
    ground-truth boxes with noise as detections, four frames side by side with ids and trails."""
    import tempfile

    import cv2

    from detcore.data.mot import parse_gt, read_seqinfo, sequences_in
    from detcore.data.shapes import make_shapes
    from detcore.data.writers import mot_frame_name
    from detcore.deploy.draw import draw_tracks

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_shapes(Path(tmp) / "mot", 0, 0, seed=seed, video=1, frames=max(frames))
        seq = read_seqinfo(sequences_in(root / "val")[0])
        gt, _ = parse_gt(seq.folder / "gt" / "gt.txt")
        tracker, trails, tiles = ByteTracker(frame_rate=seq.frame_rate or 10), {}, []
        for f in range(1, max(frames) + 1):
            g = gt[(gt[:, 0] == f) & (gt[:, 6] == 1)]
            boxes = np.column_stack([g[:, 2:4], g[:, 2:4] + g[:, 4:6]]) + rng.normal(0, 1.0, (len(g), 4))
            out = tracker.update(boxes, rng.uniform(0.6, 0.95, len(g)), g[:, 7].astype(int) - 1)
            for i, b in zip(out.ids.tolist(), out.boxes):
                trails.setdefault(i, []).append((b[:2] + b[2:]) / 2)
            if f in frames:
                img = cv2.imread(str(seq.folder / seq.im_dir / mot_frame_name(f, seq.ext)))
                rows = np.column_stack([out.boxes, out.scores, out.classes, out.ids])
                names = [seq.classes[k] for k in sorted(seq.classes)] if seq.classes else ["object"]
                draw_tracks(img, rows, names, {i: p[-15:] for i, p in trails.items()})
                cv2.putText(img, f"frame {f}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2)
                tiles.append(img)
    h = min(t.shape[0] for t in tiles)
    cv2.imwrite(str(path), np.concatenate([t[:h] for t in tiles], axis=1))
    print(json.dumps({"figure": str(path)}))


if __name__ == "__main__":
    main()
