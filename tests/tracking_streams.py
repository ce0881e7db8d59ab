"""Synthetic detection streams for the tracker tests and bench/track_reference.py (numpy only).

A stream is what a detector would give a tracker, frame by frame: objects of a few classes move at
constant velocity (with a little jitter) through a 1280x720 image, some in pairs that cross each
other, some entering from an edge mid-stream and leaving through another; some are occluded for a
stretch of frames (no detection, or a low-score one); every detection is the true box plus noise
with a high score, sometimes a low one; false positives appear at random, mostly low-score; a few
detections fall under 0.1. Everything is drawn from ``numpy.random.default_rng(seed)``, so a
stream is the same on every machine and numpy version with the same Generator algorithm (PCG64).

``STREAMS`` names the streams the fixture in tests/data/tracking/ was recorded on, each with the
tracker settings it was run with; ``make_stream(**STREAMS[name]["stream"])`` builds one.
"""
import numpy as np

WIDTH, HEIGHT = 1280.0, 720.0

STREAMS = {
    # A few objects, little noise, long occlusions: re-finding lost tracks.
    "sparse": {"stream": dict(seed=11, frames=120, objects=6, crossings=1, entering=1,
                              occlusion_prob=0.6, low_prob=0.1, false_positives=0.5, classes=2),
               "tracker": dict(frame_rate=30, fuse_score=True)},
    # Many crossings and occlusions, denser clutter, objects sometimes detected twice, and five
    # frames without any detection.
    "crowd": {"stream": dict(seed=22, frames=200, objects=18, crossings=5, entering=5,
                             occlusion_prob=0.5, low_prob=0.2, false_positives=2.0, classes=3,
                             duplicate_prob=0.5, blackout=[140, 145]),
              "tracker": dict(frame_rate=30, fuse_score=True)},
    # Objects coming and going, a 10-frame lost buffer (frame_rate 10: int(10/30*30) = 10) so
    # lost tracks expire, and no score fusion (the reference's --mot20).
    "traffic": {"stream": dict(seed=33, frames=300, objects=30, crossings=6, entering=20,
                               occlusion_prob=0.4, low_prob=0.15, false_positives=1.5, classes=3,
                               duplicate_prob=0.3),
                "tracker": dict(frame_rate=10, fuse_score=False)},
}


def _objects(rng, frames, objects, crossings, entering, classes):
    """Per object: first and last frame, centre at its first frame, velocity, size, class."""
    out = []
    for k in range(objects):
        w = rng.uniform(30, 140)
        h = w * rng.uniform(1.0, 2.6)
        cls = int(rng.integers(classes))
        speed = rng.uniform(0.5, 6.0)
        angle = rng.uniform(0, 2 * np.pi)
        vel = speed * np.array([np.cos(angle), np.sin(angle)])
        if k < 2 * crossings:
            continue                                    # placed in pairs below
        if k < 2 * crossings + entering:
            first = int(rng.integers(1, frames - 20))
            # Enter through an edge, heading inwards.
            edge = int(rng.integers(4))
            along = rng.uniform(0.15, 0.85)
            centre = {0: (-w / 2, along * HEIGHT), 1: (WIDTH + w / 2, along * HEIGHT),
                      2: (along * WIDTH, -h / 2), 3: (along * WIDTH, HEIGHT + h / 2)}[edge]
            inward = {0: (1, 0), 1: (-1, 0), 2: (0, 1), 3: (0, -1)}[edge]
            vel = np.array(inward, float) * speed + rng.uniform(-1, 1, 2)
            vel += np.array(inward, float) * 1.0
            last = frames - 1
        else:
            first, last = 0, frames - 1 - int(rng.integers(0, frames // 3)) * int(rng.random() < 0.3)
            centre = (rng.uniform(0.1, 0.9) * WIDTH, rng.uniform(0.1, 0.9) * HEIGHT)
        out.append(dict(first=first, last=last, centre=np.array(centre, float), vel=vel,
                        size=np.array([w, h]), cls=cls))
    for _ in range(crossings):
        # Two objects of similar size meet at point p at frame tm, from different directions.
        tm = int(rng.integers(15, frames - 15))
        p = np.array([rng.uniform(0.25, 0.75) * WIDTH, rng.uniform(0.25, 0.75) * HEIGHT])
        w = rng.uniform(40, 110)
        cls = int(rng.integers(classes))
        for side in (0, 1):
            angle = rng.uniform(0, 2 * np.pi)
            vel = rng.uniform(1.5, 5.0) * np.array([np.cos(angle), np.sin(angle)])
            size = np.array([w, w * rng.uniform(1.6, 2.2)]) * rng.uniform(0.9, 1.1)
            first = max(0, tm - int(rng.integers(20, 80)))
            last = min(frames - 1, tm + int(rng.integers(20, 80)))
            out.append(dict(first=first, last=last, centre=p + vel * (first - tm), vel=vel,
                            size=size, cls=cls if rng.random() < 0.7 else int(rng.integers(classes))))
    return out


def make_stream(seed, frames, objects, crossings, entering, occlusion_prob, low_prob,
                false_positives, classes, duplicate_prob=0.0, blackout=None, truth=None):
    """The stream: a list of ``frames`` tuples ``(boxes [N, 4] x1y1x2y2 float64, scores [N]
    float64, classes [N] int64)``, detections in random order within a frame.

    ``duplicate_prob``: the chance that an object is detected twice (a second, offset box with a
    high score, as NMS sometimes leaves) for a stretch of 3-30 frames. ``blackout``: a
    ``(start, stop)`` range of frames with no detections at all. ``truth``: a list that gets, per
    frame, the ground truth as MOTChallenge rows ``[frame (1-based), object id, x, y, w, h,
    consider, class, visibility]`` of the objects inside the image (a fully occluded one with
    consider 0); recording it draws no random numbers, so the stream is the same either way."""
    rng = np.random.default_rng(seed)
    objs = _objects(rng, frames, objects, crossings, entering, classes)
    for k, o in enumerate(objs):
        o["id"] = k + 1                                   # the ground-truth identity
    # Occlusions: per object maybe one stretch of 2-45 frames, detected with a low score (partly
    # occluded) or not at all.
    for o in objs:
        o["occluded"] = None
        if rng.random() < occlusion_prob and o["last"] - o["first"] > 10:
            start = int(rng.integers(o["first"] + 2, o["last"] - 2))
            o["occluded"] = (start, start + int(rng.integers(2, 46)), rng.random() < 0.35)
        o["jitter"] = np.zeros(2)
        o["double"] = None
        if rng.random() < duplicate_prob and o["last"] - o["first"] > 10:
            start = int(rng.integers(o["first"], o["last"] - 2))
            o["double"] = (start, start + int(rng.integers(3, 31)), rng.normal(0, 0.06, 4))
    stream = []
    for f in range(frames):
        boxes, scores, cls = [], [], []
        for o in objs:
            if not o["first"] <= f <= o["last"]:
                continue
            o["jitter"] = 0.8 * o["jitter"] + rng.normal(0, 0.6, 2)
            c = o["centre"] + o["vel"] * (f - o["first"]) + o["jitter"]
            size = o["size"] * (1 + 0.002 * (f - o["first"]) * np.sign(o["vel"][1]))
            true = np.r_[c - size / 2, c + size / 2]
            if true[2] < 0 or true[0] > WIDTH or true[3] < 0 or true[1] > HEIGHT:
                continue                                   # outside the image
            if truth is not None:
                occ = o["occluded"]
                hidden = occ is not None and occ[0] <= f < occ[1] and not occ[2]
                x1, y1, x2, y2 = np.clip(true, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
                truth.append([f + 1, o["id"], x1, y1, x2 - x1, y2 - y1, 0 if hidden else 1, o["cls"],
                              0.0 if hidden else 1.0])
            if rng.random() < 0.03:
                continue                                   # a missed detection
            occ = o["occluded"]
            partly = occ is not None and occ[0] <= f < occ[1]
            if partly and not occ[2]:
                continue                                   # fully occluded
            box = true + rng.normal(0, 0.02, 4) * np.r_[size, size]
            box = np.clip(box, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                continue
            if partly or rng.random() < low_prob:
                score = rng.uniform(0.12, 0.5)
            else:
                score = rng.uniform(0.55, 0.97)
            boxes.append(box)
            scores.append(score)
            cls.append(o["cls"])
            double = o["double"]
            if double is not None and double[0] <= f < double[1]:
                boxes.append(true + (double[2] + rng.normal(0, 0.01, 4)) * np.r_[size, size])
                scores.append(rng.uniform(0.6, 0.9))
                cls.append(o["cls"])
        for _ in range(rng.poisson(false_positives)):
            w, h = rng.uniform(20, 120), rng.uniform(20, 160)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            boxes.append(np.array([x, y, x + w, y + h]))
            scores.append(rng.uniform(0.5, 0.8) if rng.random() < 0.15 else rng.uniform(0.02, 0.5))
            cls.append(int(rng.integers(classes)))
        if blackout is not None and blackout[0] <= f < blackout[1]:
            boxes, scores, cls = [], [], []
        order = rng.permutation(len(scores))
        stream.append((np.array(boxes, dtype=np.float64).reshape(-1, 4)[order],
                       np.array(scores, dtype=np.float64)[order],
                       np.array(cls, dtype=np.int64)[order]))
    return stream


# -- running a tracker on a stream and comparing outputs ------------------------------------------

def track_rows(outputs):
    """Per-frame tracker outputs -> one table: ``frame`` (0-based), ``id``, ``box [R, 4]``,
    ``score``, ``cls``. ``outputs``: per frame, a sequence of ``(id, box, score, cls)``."""
    frame, ids, boxes, scores, classes = [], [], [], [], []
    for f, rows in enumerate(outputs):
        for track_id, box, score, cls in rows:
            frame.append(f)
            ids.append(track_id)
            boxes.append(box)
            scores.append(score)
            classes.append(cls)
    return {"frame": np.array(frame, dtype=np.int32), "id": np.array(ids, dtype=np.int32),
            "box": np.array(boxes, dtype=np.float64).reshape(-1, 4),
            "score": np.array(scores, dtype=np.float64), "cls": np.array(classes, dtype=np.int32)}


def run_ours(stream, tracker):
    """Our tracker (``detcore.deploy.tracker.ByteTracker``) over a stream -> ``track_rows``."""
    outputs = []
    for boxes, scores, classes in stream:
        t = tracker.update(boxes, scores, classes)
        outputs.append(list(zip(t.ids, t.boxes, t.scores, t.classes)))
    return track_rows(outputs)


def _frames(rows, n_frames):
    bounds = np.searchsorted(rows["frame"], np.arange(n_frames + 1))
    return [slice(bounds[f], bounds[f + 1]) for f in range(n_frames)]


def compare_rows(expected, actual, n_frames, atol=1e-4, rename_per_class=False):
    """Frame-by-frame comparison of two ``track_rows`` tables: the same tracks in the same order,
    the same ids, boxes within ``atol``, the same scores (classes are not compared: the reference
    has none). With ``rename_per_class`` (the expected
    rows come from one tracker per class), tracks are compared class by class and an expected id
    stands for the actual id that had its box where it first appeared, the same one to the end
    (the renaming must be one-to-one). Returns counts: frames, rows, tracks, differing frames and
    their first few indices, the largest box difference over equal frames."""
    renames = {}
    different, max_diff = [], 0.0
    for f, (e, a) in enumerate(zip(_frames(expected, n_frames), _frames(actual, n_frames))):
        groups = [(e, a)]
        if rename_per_class:
            groups = []
            for c in np.union1d(expected["cls"][e], actual["cls"][a]):
                groups.append((np.arange(e.start, e.stop)[expected["cls"][e] == c],
                               np.arange(a.start, a.stop)[actual["cls"][a] == c]))
        ok, diff = True, 0.0
        for ei, ai in groups:
            e_ids, a_ids = expected["id"][ei], actual["id"][ai]
            e_box, a_box = expected["box"][ei], actual["box"][ai]
            if len(e_ids) != len(a_ids):
                ok = False
                break
            if rename_per_class:
                for k, (eid, box) in enumerate(zip(e_ids, e_box)):
                    key = (int(expected["cls"][ei][k]), int(eid))
                    if key not in renames:
                        near = np.nonzero(np.abs(a_box - box).max(axis=1) <= atol)[0]
                        if len(near) == 1 and int(a_ids[near[0]]) not in renames.values():
                            renames[key] = int(a_ids[near[0]])
                e_ids = np.array([renames.get((int(c), int(i)), -1)
                                  for c, i in zip(expected["cls"][ei], e_ids)])
            if len(e_ids) and not (np.array_equal(e_ids, a_ids)
                                   and np.array_equal(expected["score"][ei], actual["score"][ai])):
                ok = False
                break
            if len(e_ids):
                diff = max(diff, float(np.abs(e_box - a_box).max()))
        if ok and diff <= atol:
            max_diff = max(max_diff, diff)
        else:
            different.append(f)
    return {"frames": n_frames, "rows": int(len(expected["id"])),
            "tracks": int(len(np.unique(np.stack([expected["cls"], expected["id"]], 1), axis=0))
                          if rename_per_class else len(np.unique(expected["id"]))),
            "frames_different": len(different), "first_different": different[:5],
            "max_box_diff": max_diff}
