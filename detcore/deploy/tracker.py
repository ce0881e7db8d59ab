"""ByteTrack (Zhang et al., ECCV 2022) multi-object tracking on numpy: ``ByteTracker``.

The algorithm and defaults are those of the authors' ``yolox/tracker/byte_tracker.py`` and
``matching.py`` (github.com/ifzhang/ByteTrack), written again here without torch, ``lap`` or
``cython_bbox``; on the same detections it gives the same ids and boxes (tests/test_tracker.py
checks frame by frame against outputs recorded from the reference, bench/track_reference.py).
Per frame (``update``):

1. Detections with score ``> track_thresh`` are *high*; those with ``low_thresh < score <
   track_thresh`` are *low* (a score exactly at ``track_thresh`` is in neither, as there).
2. Every track is predicted one frame by the Kalman filter (``detcore.deploy.kalman``); a track
   that is not currently tracked (lost) has its height velocity zeroed first.
3. First association: confirmed tracked tracks plus lost tracks against the high detections, cost
   ``1 - IoU * score`` (``fuse_score``; plain ``1 - IoU`` with ``fuse_score=False``, the
   reference's ``--mot20``), assignment with a cost limit ``match_thresh``. A matched lost track
   is re-found with its old id.
4. Second association: the still-unmatched *tracked* tracks against the low detections, cost
   ``1 - IoU``, limit 0.5. Tracked tracks left unmatched become lost.
5. Unconfirmed tracks (started on the previous frame) against the high detections left over,
   cost as in 3, limit 0.7; unmatched unconfirmed tracks are removed.
6. The high detections still left over with score ``>= det_thresh = track_thresh + 0.1`` start
   new tracks. They are unconfirmed (not output) until matched on the next frame, except on the
   tracker's first frame, where they are confirmed at once.
7. Lost tracks not seen for more than ``max_time_lost = int(frame_rate / 30 * track_buffer)``
   frames are removed; tracked and lost tracks whose IoU distance is below 0.15 are duplicates,
   and the younger of each pair (frames from its start to its last update) is dropped (the
   tracked one when they are equally old).
8. Output: the confirmed tracked tracks, each with its id, the box of its Kalman state after this
   frame's update (not the detection's box), the score of the detection it last matched and its
   class; in the reference's order: tracks that were already in the tracked list (in their
   order; this includes those confirmed this frame), then those started this frame (output on the
   first frame only, in detection order), then the re-found ones (in the order of the pool).

Details kept from the reference because they decide the numbers:

- IoU is pixel-inclusive by default, as ``cython_bbox.bbox_overlaps``: widths and heights are
  ``x2 - x1 + 1``, ``y2 - y1 + 1`` (``pixel_inclusive_iou=False`` for the continuous IoU).
- The assignment is the optimum of ``lap.lapjv(cost, extend_cost=True, cost_limit=thresh)``: the
  matching that minimises the sum of ``cost - thresh`` over matched pairs, so only pairs with a
  cost below the limit are matched. It is solved here with ``scipy.optimize.linear_sum_assignment``
  on ``min(cost - thresh, 0)``, or with ``lap`` itself where scipy is not installed (one of the two
  is needed: neither is a runtime requirement of the package); a pair exactly at the limit is left
  unmatched (a tie ``lapjv`` may break either way).
- A lost track removed in a frame (step 7) still takes part in the next frame's first
  association (the reference drops it from its lost list one frame late); if it is re-found then,
  it keeps its id but is dropped for good the next time it is lost.

Deliberate differences from the reference:

- Track ids come from a counter per ``ByteTracker`` instance (1, 2, ... from construction or
  ``reset()``); the reference counts in a class attribute shared by every tracker of the process
  (``BaseTrack._count``), so a second tracker there does not start at 1.
- Class-aware by default: a detection only matches tracks of its class (the cost across classes
  is infinite in all three associations) and only tracks of one class are duplicates of each
  other, so a track never changes class; ``class_agnostic=True`` matches across classes (this
  is the reference, which has no classes), and a track then takes the class of the detection it
  last matched. Class-aware tracking equals one reference tracker per class, up to the ids.
- Boxes come in as image coordinates; the reference divides its detector's boxes by the
  letterbox scale itself (``img_info``, ``img_size``).
- Removed tracks are not kept: the reference appends every removed track to a list that grows for
  the whole video.

An option the reference does not have: ``output_boxes="detection"`` reports each track's box as the
box of the detection it matched last instead of its Kalman state (the default, the reference's).
Roboflow's ``trackers`` report detection boxes; against ground truth they are often tighter than
the filtered state, whose velocity lags a turning or jittering object (see docs/tracking.md).
"""
import functools
from dataclasses import dataclass

import numpy as np

from detcore.deploy.kalman import KalmanFilter

TRACKED, LOST, REMOVED = 1, 2, 3
SMALL_FRAME = 2048    # tracks x detections up to which one IoU matrix serves all three associations


@dataclass(frozen=True)
class Tracks:
    """The tracks output for one frame: ``ids [M]`` (int64), ``boxes [M, 4]`` (x1, y1, x2, y2,
    float64), ``scores [M]``, ``classes [M]`` (int64)."""
    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self):
        return len(self.ids)


def box_iou(a, b, pixel_inclusive=True):
    """IoU of every box of ``a [N, 4]`` with every box of ``b [M, 4]`` (x1, y1, x2, y2) -> [N, M].
    ``pixel_inclusive`` adds 1 to widths and heights (``cython_bbox.bbox_overlaps``)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if pixel_inclusive else 0.0
    # widths and heights together, few numpy calls: a frame of 10 objects is all call overhead
    wh_a, wh_b = a[:, 2:] - a[:, :2] + one, b[:, 2:] - b[:, :2] + one
    area_a, area_b = wh_a[:, 0] * wh_a[:, 1], wh_b[:, 0] * wh_b[:, 1]
    iw = np.minimum(a[:, 2:3], b[:, 2]) - np.maximum(a[:, 0:1], b[:, 0]) + one
    ih = np.minimum(a[:, 3:4], b[:, 3]) - np.maximum(a[:, 1:2], b[:, 1]) + one
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    union = area_a[:, None] + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@functools.lru_cache(maxsize=None)
def _solver(name=None):
    """``scipy`` (preferred) or ``lap``: whichever is installed, or the one named."""
    if name in (None, "scipy"):
        try:
            from scipy.optimize import linear_sum_assignment
            return "scipy", linear_sum_assignment
        except ImportError:
            if name == "scipy":
                raise
    try:
        import lap
    except ImportError:
        raise ImportError("ByteTracker's assignment needs scipy or lap: pip install scipy") from None
    return "lap", lap.lapjv


def assign(cost, thresh, solver=None):
    """Minimum-cost matching of rows to columns in which a pair is only worth matching below
    ``thresh`` (``lap.lapjv(cost, extend_cost=True, cost_limit=thresh)``): returns ``matches
    [K, 2]`` (row, column; rows ascending), unmatched rows, unmatched columns (ascending).
    ``solver``: "scipy", "lap" or None (scipy if installed, else lap)."""
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if cost.size == 0:
        return np.empty((0, 2), dtype=np.int64), np.arange(n), np.arange(m)
    name, solve = _solver(solver)
    if name == "scipy":
        rows, cols = solve(np.minimum(cost - thresh, 0.0))
    else:
        # A pair above the limit is never in lapjv's optimum; a finite stand-in for infinity.
        _, x, _ = solve(np.minimum(cost, thresh + 1.0), extend_cost=True, cost_limit=thresh)
        rows = np.nonzero(x >= 0)[0]
        cols = x[rows]
    keep = cost[rows, cols] < thresh
    matches = np.empty((int(keep.sum()), 2), dtype=np.int64)
    matches[:, 0], matches[:, 1] = rows[keep], cols[keep]
    free_rows, free_cols = np.ones(n, dtype=bool), np.ones(m, dtype=bool)
    free_rows[matches[:, 0]] = False
    free_cols[matches[:, 1]] = False
    return matches, np.flatnonzero(free_rows), np.flatnonzero(free_cols)


def _xyah_to_tlbr(xyah):
    """[..., 4] (cx, cy, a, h) -> (x1, y1, x2, y2), in the reference's order of operations."""
    w = xyah[..., 2] * xyah[..., 3]
    h = xyah[..., 3]
    out = np.empty(xyah.shape[:-1] + (4,))
    out[..., 0] = xyah[..., 0] - w / 2
    out[..., 1] = xyah[..., 1] - h / 2
    out[..., 2] = w + out[..., 0]
    out[..., 3] = h + out[..., 1]
    return out


class _Track:
    __slots__ = ("track_id", "cls", "score", "mean", "covariance", "state", "is_activated",
                 "frame_id", "start_frame", "tracklet_len", "removed_at", "det_box")

    def __init__(self, track_id, cls, score, mean, covariance, frame_id, activated, det_box=None):
        self.track_id, self.cls, self.score = track_id, cls, score
        self.det_box = det_box        # the box of the detection it last matched
        self.mean, self.covariance = mean, covariance
        self.state, self.is_activated = TRACKED, activated
        self.frame_id = self.start_frame = frame_id
        self.tracklet_len = 0
        self.removed_at = None        # the frame it was first removed (a reference bookkeeping)

    @property
    def tlbr(self):
        return _xyah_to_tlbr(self.mean[:4])


class _Detections:
    """One frame's detections of one score band, as the reference's STrack holds them."""

    def __init__(self, boxes, scores, classes):
        wh = boxes[:, 2:] - boxes[:, :2]
        self.tlbr = np.concatenate([boxes[:, :2], boxes[:, :2] + wh], axis=1)
        self.xyah = np.concatenate([boxes[:, :2] + wh / 2, (wh[:, 0] / wh[:, 1])[:, None],
                                    wh[:, 1:]], axis=1)
        self.scores, self.classes = scores, classes

    def __len__(self):
        return len(self.scores)

    def subset(self, index):
        out = object.__new__(_Detections)
        out.tlbr, out.xyah = self.tlbr[index], self.xyah[index]
        out.scores, out.classes = self.scores[index], self.classes[index]
        return out


def _fuse(cost, scores, fuse):
    """``1 - IoU * score`` from the IoU distance (the reference's ``fuse_score``), or the
    distance itself."""
    return 1.0 - (1.0 - cost) * scores[None, :] if fuse and cost.size else cost


def _join(a, b):
    """``a`` then the tracks of ``b`` whose id is not in ``a`` yet (reference: joint_stracks)."""
    seen = {t.track_id for t in a}
    out = list(a)
    for t in b:
        if t.track_id not in seen:
            seen.add(t.track_id)
            out.append(t)
    return out


def _without(a, b):
    """The tracks of ``a`` whose id is not in ``b`` (reference: sub_stracks)."""
    ids = {t.track_id for t in b}
    return [t for t in a if t.track_id not in ids]


class ByteTracker:
    """ByteTrack on numpy; see the module docstring for the algorithm and what differs from the
    reference. ``update(boxes, scores, classes)`` once per frame returns the frame's ``Tracks``."""

    def __init__(self, track_thresh=0.5, low_thresh=0.1, match_thresh=0.8, track_buffer=30,
                 frame_rate=30, new_track_margin=0.1, second_match_thresh=0.5,
                 unconfirmed_match_thresh=0.7, duplicate_thresh=0.15, fuse_score=True,
                 class_agnostic=False, pixel_inclusive_iou=True, output_boxes="kalman"):
        if output_boxes not in ("kalman", "detection"):
            raise ValueError(f"output_boxes must be 'kalman' or 'detection', got {output_boxes!r}")
        self.output_boxes = output_boxes
        self.track_thresh = track_thresh
        self.low_thresh = low_thresh
        self.det_thresh = track_thresh + new_track_margin
        self.match_thresh = match_thresh
        self.second_match_thresh = second_match_thresh
        self.unconfirmed_match_thresh = unconfirmed_match_thresh
        self.duplicate_thresh = duplicate_thresh
        self.max_time_lost = int(frame_rate / 30.0 * track_buffer)
        self.fuse_score = fuse_score
        self.class_agnostic = class_agnostic
        self.pixel_inclusive_iou = pixel_inclusive_iou
        self.kalman_filter = KalmanFilter()
        self.reset()

    def reset(self):
        """Forget every track and restart the frame and id counters (ids start at 1 again)."""
        self.frame_id = 0
        self._last_id = 0
        self.tracked_tracks = []      # tracked (confirmed or not), in the reference's order
        self.lost_tracks = []

    # -- the pieces of a frame -------------------------------------------------------------

    def _predict(self, tracks):
        if not tracks:
            return
        means = np.array([t.mean for t in tracks])
        covs = np.array([t.covariance for t in tracks])
        means[np.array([t.state != TRACKED for t in tracks]), 7] = 0.0
        means, covs = self.kalman_filter.multi_predict(means, covs)
        for t, mean, cov in zip(tracks, means, covs):
            t.mean, t.covariance = mean, cov

    def _iou_distance(self, tracks, boxes, classes):
        """``1 - IoU`` of tracks and boxes, infinite across classes unless class-agnostic."""
        if not tracks or len(boxes) == 0:
            return np.zeros((len(tracks), len(boxes)))
        track_boxes = _xyah_to_tlbr(np.array([t.mean[:4] for t in tracks]))
        cost = 1.0 - box_iou(track_boxes, boxes, self.pixel_inclusive_iou)
        if not self.class_agnostic:
            cost[np.array([t.cls for t in tracks])[:, None] != np.asarray(classes)[None, :]] = np.inf
        return cost

    def _apply(self, tracks, matches, dets):
        """Kalman-update the matched tracks with their detections (one batched update)."""
        if len(matches) == 0:
            return []
        matched = [tracks[i] for i in matches[:, 0]]
        means, covs = self.kalman_filter.update(np.array([t.mean for t in matched]),
                                                np.array([t.covariance for t in matched]),
                                                dets.xyah[matches[:, 1]])
        for t, mean, cov, j in zip(matched, means, covs, matches[:, 1]):
            refound = t.state != TRACKED
            t.mean, t.covariance = mean, cov
            t.tracklet_len = 0 if refound else t.tracklet_len + 1
            t.state, t.is_activated, t.frame_id = TRACKED, True, self.frame_id
            t.score = dets.scores[j]
            t.det_box = dets.tlbr[j]
            if self.class_agnostic:
                t.cls = int(dets.classes[j])
        return matched

    def _remove_duplicates(self, tracked, lost):
        if not tracked or not lost:
            return tracked, lost
        dist = self._iou_distance(tracked, _xyah_to_tlbr(np.array([t.mean[:4] for t in lost])),
                                  [t.cls for t in lost])
        drop_tracked, drop_lost = set(), set()
        for p, q in zip(*np.nonzero(dist < self.duplicate_thresh)):
            age_p = tracked[p].frame_id - tracked[p].start_frame
            age_q = lost[q].frame_id - lost[q].start_frame
            if age_p > age_q:
                drop_lost.add(q)
            else:
                drop_tracked.add(p)
        return ([t for i, t in enumerate(tracked) if i not in drop_tracked],
                [t for i, t in enumerate(lost) if i not in drop_lost])

    # -- one frame -----------------------------------------------------------------------------

    def update(self, boxes, scores, classes=None):
        """Track one frame: ``boxes [N, 4]`` x1, y1, x2, y2 in image pixels, ``scores [N]``,
        ``classes [N]`` (integers; None: all 0). Returns the frame's confirmed tracks."""
        self.frame_id += 1
        frame = self.frame_id
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = (np.zeros(len(scores), dtype=np.int64) if classes is None
                   else np.asarray(classes).reshape(-1).astype(np.int64))
        high = scores > self.track_thresh
        low = (scores > self.low_thresh) & (scores < self.track_thresh)
        dets = _Detections(boxes[high], scores[high], classes[high])
        dets_low = _Detections(boxes[low], scores[low], classes[low])

        unconfirmed = [t for t in self.tracked_tracks if not t.is_activated]
        pool = _join([t for t in self.tracked_tracks if t.is_activated], self.lost_tracks)
        self._predict(pool)
        was_tracked = [t.state == TRACKED for t in pool]
        # The IoU distances of the three associations from one matrix: each uses tracks whose
        # state has not changed since this point (the pool before its updates, the unconfirmed
        # tracks), so its slices are exactly the matrices computed apart. A small frame takes the
        # low detections into it too (one call instead of three: at ten objects, calls are the
        # cost); a large one leaves them to the second association, whose few rows are cheaper.
        n_pool, n_high = len(pool), len(dets)
        small = (n_pool + len(unconfirmed)) * (n_high + len(dets_low)) <= SMALL_FRAME
        dist = self._iou_distance(pool + unconfirmed, *(
            (np.concatenate([dets.tlbr, dets_low.tlbr]), np.concatenate([dets.classes, dets_low.classes]))
            if small else (dets.tlbr, dets.classes)))

        # First association: tracked + lost tracks with the high detections.
        matches, left_pool, left_dets = assign(_fuse(dist[:n_pool, :n_high], dets.scores, self.fuse_score),
                                               self.match_thresh)
        self._apply(pool, matches, dets)
        refound = [pool[i] for i in matches[:, 0] if not was_tracked[i]]
        activated = [pool[i] for i in matches[:, 0] if was_tracked[i]]

        # Second association: tracked tracks left over with the low detections.
        rows = [i for i in left_pool if pool[i].state == TRACKED]
        remaining = [pool[i] for i in rows]
        matches, left_remaining, _ = assign(dist[rows, n_high:] if small else
                                            self._iou_distance(remaining, dets_low.tlbr, dets_low.classes),
                                            self.second_match_thresh)
        activated += self._apply(remaining, matches, dets_low)
        newly_lost = []
        for i in left_remaining:
            if remaining[i].state != LOST:
                remaining[i].state = LOST
                newly_lost.append(remaining[i])

        # Unconfirmed tracks with the high detections left over.
        cost = dist[n_pool:, :n_high][:, left_dets]
        dets = dets.subset(left_dets)
        matches, left_unconfirmed, left_dets = assign(_fuse(cost, dets.scores, self.fuse_score),
                                                      self.unconfirmed_match_thresh)
        activated += self._apply(unconfirmed, matches, dets)
        for i in left_unconfirmed:
            unconfirmed[i].state = REMOVED
            unconfirmed[i].removed_at = frame

        # New tracks from the high detections still left over, above det_thresh.
        new = left_dets[dets.scores[left_dets] >= self.det_thresh]
        if len(new):
            means, covs = self.kalman_filter.initiate(dets.xyah[new])
            for j, mean, cov in zip(new, means, covs):
                self._last_id += 1
                activated.append(_Track(self._last_id, int(dets.classes[j]), dets.scores[j],
                                        mean, cov, frame, activated=frame == 1, det_box=dets.tlbr[j]))

        for t in self.lost_tracks:
            if frame - t.frame_id > self.max_time_lost:
                t.state = REMOVED
                if t.removed_at is None:
                    t.removed_at = frame

        tracked = [t for t in self.tracked_tracks if t.state == TRACKED]
        tracked = _join(_join(tracked, activated), refound)
        lost = _without(self.lost_tracks, tracked) + newly_lost
        # A track removed on an earlier frame leaves the lost list now (the reference subtracts
        # its list of removed tracks before appending this frame's).
        lost = [t for t in lost if t.removed_at is None or t.removed_at >= frame]
        self.tracked_tracks, self.lost_tracks = self._remove_duplicates(tracked, lost)
        return self._output([t for t in self.tracked_tracks if t.is_activated])

    def _output(self, tracks):
        if not tracks:
            return Tracks(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
        boxes = (np.array([t.det_box for t in tracks]) if self.output_boxes == "detection"
                 else _xyah_to_tlbr(np.array([t.mean[:4] for t in tracks])))
        return Tracks(np.array([t.track_id for t in tracks], dtype=np.int64), boxes,
                      np.array([t.score for t in tracks], dtype=np.float64),
                      np.array([t.cls for t in tracks], dtype=np.int64))
