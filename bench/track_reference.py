"""ByteTrack fidelity: our ``detcore.deploy.tracker.ByteTracker`` against the authors' tracker
(github.com/ifzhang/ByteTrack ``yolox/tracker/``) on the synthetic streams of
tests/tracking_streams.py; one JSON line per stream and comparison.

    python bench/track_reference.py --reference /tmp/peers/bytetrack_ref \\
        [--pythonpath /tmp/peers/site] [--no-write]
    python bench/track_reference.py            # ours against the recorded fixture

``--reference PATH``: a folder holding the reference's ``yolox/tracker/{basetrack,byte_tracker,
kalman_filter,matching}.py`` (with empty ``yolox/__init__.py`` and ``yolox/tracker/__init__.py``,
so this ``yolox`` package shadows the project's), importable with ``lap``, ``cython_bbox``,
``scipy``, ``cv2`` and ``torch`` (``--pythonpath`` puts folders holding them first on
``sys.path``). ``np.float``, which the reference uses and numpy >= 1.24 no longer has, is set to
``float`` before it is imported. Per stream the reference runs twice: one ``BYTETracker`` on all
detections (its output is what ``class_agnostic=True`` must give) and one ``BYTETracker`` per class
on that class's detections (what the class-aware default must give, up to ids). Its global id
counter ``BaseTrack._count`` is set to 0 before each stream, so the single tracker's ids start at 1
(the per-class trackers share the counter, so their ids are unique across classes). Detections go
in as its ``[N, 5]`` (x1, y1, x2, y2, score) with ``img_info == img_size`` (scale 1). The outputs
are written to tests/data/tracking/<stream>.npz (unless ``--no-write``), then our tracker is
compared with them. Without ``--reference`` our tracker is compared with the recorded files.
"""
import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import cpu_name  # noqa: E402
FIXTURE_DIR = ROOT / "tests" / "data" / "tracking"
REF_ARGS = dict(track_thresh=0.5, track_buffer=30, match_thresh=0.8)


def _streams_module():
    spec = importlib.util.spec_from_file_location("tracking_streams", ROOT / "tests" / "tracking_streams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reference(path, pythonpath=()):
    """Import the reference's ``yolox.tracker.byte_tracker`` from ``path``."""
    if "yolox" in sys.modules:
        raise RuntimeError("a yolox package is imported already; the reference's cannot be")
    sys.path[:0] = [str(Path(path).resolve()), *map(str, pythonpath)]
    np.float = float                        # the reference's np.float (removed in numpy 1.24)
    from yolox.tracker import byte_tracker
    if not Path(byte_tracker.__file__).resolve().is_relative_to(Path(path).resolve()):
        raise RuntimeError(f"imported {byte_tracker.__file__}, not the reference under {path}")
    return byte_tracker


def _revision(path):
    rev = Path(path) / "REVISION"
    if rev.exists():
        return rev.read_text().strip()
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def run_reference(bt, streams, stream, tracker_cfg, classes=None):
    """The reference over a stream -> ``track_rows``; ``classes``: one tracker per class."""
    args = argparse.Namespace(**REF_ARGS, mot20=not tracker_cfg["fuse_score"])
    bt.BaseTrack._count = 0
    groups = [None] if classes is None else list(range(classes))
    trackers = [bt.BYTETracker(args, frame_rate=tracker_cfg["frame_rate"]) for _ in groups]
    size = (720, 1280)
    outputs = []
    for boxes, scores, cls in stream:
        rows = []
        for group, tracker in zip(groups, trackers):
            keep = np.ones(len(scores), bool) if group is None else cls == group
            dets = np.concatenate([boxes[keep], scores[keep, None]], axis=1)
            for t in tracker.update(dets, size, size):
                rows.append((t.track_id, t.tlbr, t.score, -1 if group is None else group))
        outputs.append(rows)
    return streams.track_rows(outputs)


def stream_summary(stream):
    """What the test checks the regenerated stream against: detections per frame and sums."""
    counts = np.array([len(s) for _, s, _ in stream], dtype=np.int32)
    boxes = np.concatenate([b for b, _, _ in stream])
    scores = np.concatenate([s for _, s, _ in stream])
    return counts, np.array([boxes.sum(), scores.sum()])


def write_fixture(path, meta, counts, sums, agnostic, per_class):
    arrays = {"meta": np.array(json.dumps(meta)), "det_count": counts, "det_sums": sums}
    for prefix, rows in (("", agnostic), ("pc_", per_class)):
        for key in ("frame", "id", "box", "score"):
            arrays[prefix + key] = rows[key]
        if prefix:
            arrays[prefix + "cls"] = rows["cls"]
    np.savez_compressed(path, **arrays)


def load_fixture(path):
    """A recorded fixture -> (meta, det_count, det_sums, agnostic rows, per-class rows)."""
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        agnostic = {k: z[k] for k in ("frame", "id", "box", "score")}
        agnostic["cls"] = np.full(len(agnostic["id"]), -1, np.int32)
        per_class = {k: z["pc_" + k] for k in ("frame", "id", "box", "score", "cls")}
        return meta, z["det_count"], z["det_sums"], agnostic, per_class


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", help="folder with the reference's yolox/tracker/")
    ap.add_argument("--pythonpath", action="append", default=[],
                    help="a folder put first on sys.path for the reference (lap, cython_bbox)")
    ap.add_argument("--no-write", action="store_true", help="do not (re)write the fixture")
    ap.add_argument("--out", default=str(FIXTURE_DIR))
    args = ap.parse_args()

    bt = load_reference(args.reference, args.pythonpath) if args.reference else None
    streams = _streams_module()
    sys.path.insert(0, str(ROOT))
    from detcore.deploy.tracker import ByteTracker
    out_dir = Path(args.out)
    cpu = cpu_name()
    for name, spec in streams.STREAMS.items():
        stream = streams.make_stream(**spec["stream"])
        cfg = spec["tracker"]
        n_classes = spec["stream"]["classes"]
        fixture = out_dir / f"{name}.npz"
        timings = {}
        if bt is not None:
            t0 = time.perf_counter()
            agnostic = run_reference(bt, streams, stream, cfg)
            timings["reference_ms_per_frame"] = 1e3 * (time.perf_counter() - t0) / len(stream)
            per_class = run_reference(bt, streams, stream, cfg, classes=n_classes)
            source = "reference"
            if not args.no_write:
                out_dir.mkdir(parents=True, exist_ok=True)
                meta = {"reference": "github.com/ifzhang/ByteTrack yolox/tracker/",
                        "revision": _revision(args.reference), "stream": spec["stream"],
                        "tracker": cfg, "reference_args": REF_ARGS}
                write_fixture(fixture, meta, *stream_summary(stream), agnostic, per_class)
        else:
            meta, counts, sums, agnostic, per_class = load_fixture(fixture)
            new_counts, new_sums = stream_summary(stream)
            if not (np.array_equal(counts, new_counts) and np.allclose(sums, new_sums, rtol=1e-12)):
                raise SystemExit(f"{name}: the generated stream differs from the recorded one")
            source = "fixture"
        t0 = time.perf_counter()
        ours = streams.run_ours(stream, ByteTracker(class_agnostic=True, **cfg))
        timings["ours_ms_per_frame"] = 1e3 * (time.perf_counter() - t0) / len(stream)
        ours_pc = streams.run_ours(stream, ByteTracker(**cfg))
        common = {"bench": "track_reference", "stream": name, "against": source,
                  "detections": int(sum(len(s) for _, s, _ in stream)), "tracker": cfg}
        print(json.dumps({**common, "mode": "class_agnostic",
                          **streams.compare_rows(agnostic, ours, len(stream)),
                          **{k: round(v, 3) for k, v in timings.items()}, "cpu": cpu}), flush=True)
        print(json.dumps({**common, "mode": "class_aware_vs_reference_per_class",
                          **streams.compare_rows(per_class, ours_pc, len(stream), rename_per_class=True)}),
              flush=True)
        if bt is not None and not args.no_write:
            print(json.dumps({"bench": "track_reference", "stream": name, "wrote": str(fixture),
                              "bytes": fixture.stat().st_size}), flush=True)


if __name__ == "__main__":
    main()
