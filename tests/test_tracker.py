"""ByteTracker (detcore/deploy/tracker.py) and its Kalman filter (detcore/deploy/kalman.py).

The fidelity tests replay the synthetic streams of tests/tracking_streams.py and compare, frame by
frame, with what the authors' ByteTrack (``yolox/tracker/``) output on them, recorded by
``python bench/track_reference.py --reference PATH`` in tests/data/tracking/<stream>.npz. The
other tests check hand-computed values and the algorithm's rules on tiny scenes (their expected
ids were also what the reference gives)."""
import json
from pathlib import Path

import numpy as np
import pytest

from detcore.deploy.kalman import KalmanFilter
from detcore.deploy.tracker import ByteTracker, assign, box_iou
from tracking_streams import STREAMS, compare_rows, make_stream, run_ours

FIXTURES = Path(__file__).resolve().parent / "data" / "tracking"


def _fixture(name):
    with np.load(FIXTURES / f"{name}.npz") as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = json.loads(str(data["meta"]))
    agnostic = {k: data[k] for k in ("frame", "id", "box", "score")}
    per_class = {k: data["pc_" + k] for k in ("frame", "id", "box", "score", "cls")}
    return data, agnostic, per_class


# -- against the reference -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_is_the_recorded_one(name):
    data, _, _ = _fixture(name)
    assert data["meta"]["stream"] == STREAMS[name]["stream"]
    assert data["meta"]["tracker"] == STREAMS[name]["tracker"]
    stream = make_stream(**STREAMS[name]["stream"])
    assert [len(s) for _, s, _ in stream] == data["det_count"].tolist()
    sums = [np.concatenate([b for b, _, _ in stream]).sum(), np.concatenate([s for _, s, _ in stream]).sum()]
    np.testing.assert_allclose(sums, data["det_sums"], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_class_agnostic_equals_the_reference(name):
    """Same ids, in the same order, on the same boxes (1e-4) with the same scores, every frame."""
    _, expected, _ = _fixture(name)
    stream = make_stream(**STREAMS[name]["stream"])
    actual = run_ours(stream, ByteTracker(class_agnostic=True, **STREAMS[name]["tracker"]))
    result = compare_rows(expected, actual, len(stream))
    assert result["frames_different"] == 0, result
    assert len(actual["id"]) == len(expected["id"]) > 100
    np.testing.assert_array_equal(actual["frame"], expected["frame"])
    np.testing.assert_array_equal(actual["id"], expected["id"])
    np.testing.assert_allclose(actual["box"], expected["box"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(actual["score"], expected["score"])


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_class_aware_equals_one_reference_tracker_per_class(name):
    _, _, expected = _fixture(name)
    stream = make_stream(**STREAMS[name]["stream"])
    actual = run_ours(stream, ByteTracker(**STREAMS[name]["tracker"]))
    result = compare_rows(expected, actual, len(stream), rename_per_class=True)
    assert result["frames_different"] == 0, result
    assert len(actual["id"]) == len(expected["id"])
    # A track never changes class.
    for track_id in np.unique(actual["id"]):
        assert len(np.unique(actual["cls"][actual["id"] == track_id])) == 1


def test_the_comparison_sees_a_difference():
    """The fixture decides: a box 2e-4 off, a renamed id, the continuous IoU or the other score
    fusion each make frames differ."""
    _, expected, _ = _fixture("sparse")
    n = int(expected["frame"].max()) + 1
    moved = {**expected, "box": expected["box"].copy()}
    moved["box"][10, 2] += 2e-4
    assert compare_rows(expected, moved, n)["frames_different"] == 1
    renamed = {**expected, "id": np.where(expected["id"] == 1, 99, expected["id"])}
    frames_with_1 = len(np.unique(expected["frame"][expected["id"] == 1]))
    assert compare_rows(expected, renamed, n)["frames_different"] == frames_with_1 > 0
    stream = make_stream(**STREAMS["sparse"]["stream"])
    for change in ({"pixel_inclusive_iou": False}, {"fuse_score": False}):
        cfg = {**STREAMS["sparse"]["tracker"], **change}
        actual = run_ours(stream, ByteTracker(class_agnostic=True, **cfg))
        assert compare_rows(expected, actual, n)["frames_different"] > 0, change


# -- Kalman filter ---------------------------------------------------------------------------------

def test_kalman_initiate_predict_update_by_hand():
    kf = KalmanFilter()
    mean, cov = kf.initiate([100.0, 50.0, 0.5, 80.0])
    np.testing.assert_array_equal(mean, [100, 50, 0.5, 80, 0, 0, 0, 0])
    # std: 2 * h / 20 = 8 (x, y, h), 1e-2 (a), 10 * h / 160 = 5 (vx, vy, vh), 1e-5 (va)
    np.testing.assert_allclose(np.diag(cov), [64, 64, 1e-4, 64, 25, 25, 1e-10, 25], rtol=1e-12)
    assert np.count_nonzero(cov - np.diag(np.diag(cov))) == 0

    mean[4] = 2.0                                   # vx = 2 px/frame
    mean, cov = kf.predict(mean, cov)
    np.testing.assert_allclose(mean, [102, 50, 0.5, 80, 2, 0, 0, 0])
    # P_xx' = 64 + 25 + (80/20)^2 = 105, P_x,vx' = 25, P_vx' = 25 + (80/160)^2 = 25.25
    assert cov[0, 0] == pytest.approx(105) and cov[3, 3] == pytest.approx(105)
    assert cov[0, 4] == pytest.approx(25) and cov[4, 0] == pytest.approx(25)
    assert cov[4, 4] == pytest.approx(25.25)
    assert cov[2, 2] == pytest.approx(1e-4 + 1e-10 + 1e-4, rel=1e-12)

    projected, s = kf.project(mean, cov)
    np.testing.assert_allclose(projected, [102, 50, 0.5, 80])
    assert s[0, 0] == pytest.approx(105 + 16) and s[2, 2] == pytest.approx(2e-4 + 1e-10 + 1e-2)

    # Measured x 4 px ahead of the prediction: gain 105/121 on x, 25/121 on vx.
    mean2, cov2 = kf.update(mean, cov, [106.0, 50.0, 0.5, 80.0])
    assert mean2[0] == pytest.approx(102 + 4 * 105 / 121)
    assert mean2[4] == pytest.approx(2 + 4 * 25 / 121)
    np.testing.assert_allclose(mean2[[1, 2, 3, 5, 6, 7]], [50, 0.5, 80, 0, 0, 0], atol=1e-12)
    assert cov2[0, 0] == pytest.approx(105 * 16 / 121)
    assert cov2[4, 4] == pytest.approx(25.25 - 25 * 25 / 121)


def test_kalman_batch_equals_one_by_one():
    kf = KalmanFilter()
    rng = np.random.default_rng(0)
    z = np.c_[rng.uniform(0, 500, (5, 2)), rng.uniform(0.3, 1, 5), rng.uniform(20, 200, 5)]
    means, covs = kf.initiate(z)
    assert means.shape == (5, 8) and covs.shape == (5, 8, 8)
    means[:, 4:6] = rng.normal(0, 3, (5, 2))
    p_means, p_covs = kf.multi_predict(means, covs)
    measured = z + rng.normal(0, 2, (5, 4)) * [1, 1, 0.01, 1]
    u_means, u_covs = kf.update(p_means, p_covs, measured)
    for i in range(5):
        m, c = kf.predict(means[i], covs[i])
        np.testing.assert_allclose(m, p_means[i], rtol=1e-13)
        np.testing.assert_allclose(c, p_covs[i], rtol=1e-13)
        m, c = kf.update(m, c, measured[i])
        np.testing.assert_allclose(m, u_means[i], rtol=1e-12)
        np.testing.assert_allclose(c, u_covs[i], rtol=1e-12, atol=1e-12)
    # Symmetric, positive definite covariances.
    np.testing.assert_allclose(u_covs, np.swapaxes(u_covs, 1, 2), atol=1e-9)
    assert (np.linalg.eigvalsh(u_covs) > 0).all()


# -- IoU and assignment ----------------------------------------------------------------------------

def test_box_iou_pixel_inclusive_as_cython_bbox():
    a, b = np.array([[0, 0, 10, 10.0]]), np.array([[5, 5, 15, 15.0], [0, 0, 10, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[36 / (121 + 121 - 36), 1, 0]])
    np.testing.assert_allclose(box_iou(a, b, pixel_inclusive=False), [[25 / 175, 1, 0]])
    # Touching boxes overlap by one pixel column when pixel-inclusive.
    np.testing.assert_allclose(box_iou(a, [[10, 0, 20, 10.0]]), [[11 / (121 + 121 - 11)]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_assign_is_optimal_under_the_cost_limit():
    # Greedy would take (0, 0) at 0.5; the optimum under limit 0.8 is (0, 1) + (1, 0).
    matches, rows, cols = assign(np.array([[0.5, 0.6], [0.55, 0.95]]), 0.8)
    assert matches.tolist() == [[0, 1], [1, 0]] and rows.tolist() == [] and cols.tolist() == []
    # A pair at or above the limit is never matched, even if it is the only one.
    matches, rows, cols = assign(np.array([[0.9, 0.85, 0.1], [0.81, np.inf, 0.8]]), 0.8)
    assert matches.tolist() == [[0, 2]] and rows.tolist() == [1] and cols.tolist() == [0, 1]
    # Sums of (cost - limit): (0,1)+(1,0) -0.6-0.6 = -1.2 is below (0,0)+(1,1) -0.7-0.1 = -0.8,
    # so the cross pairs win although (0,0) is the cheapest pair.
    matches, _, _ = assign(np.array([[0.1, 0.2], [0.2, 0.7]]), 0.8)
    assert matches.tolist() == [[0, 1], [1, 0]]
    matches, rows, cols = assign(np.zeros((0, 3)), 0.8)
    assert matches.shape == (0, 2) and cols.tolist() == [0, 1, 2]


def test_assign_equals_lapjv_where_installed():
    """The reference's call, on random matrices: scipy's optimum is lapjv's (and so is ours
    through lap, with infinite costs too)."""
    lap = pytest.importorskip("lap")
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, m = rng.integers(1, 9, 2)
        cost = rng.uniform(0, 1.2, (n, m))
        thresh = rng.choice([0.5, 0.7, 0.8])
        _, x, _ = lap.lapjv(cost, extend_cost=True, cost_limit=thresh)
        expected = [[i, j] for i, j in enumerate(x) if j >= 0]
        assert assign(cost, thresh, solver="scipy")[0].tolist() == expected
        cost[rng.random((n, m)) < 0.3] = np.inf
        ours = [a.tolist() for a in assign(cost, thresh, solver="scipy")]
        assert [a.tolist() for a in assign(cost, thresh, solver="lap")] == ours


# -- the algorithm's rules on tiny scenes ----------------------------------------------------------

B = [80.0, 10.0, 120.0, 90.0]          # cx 100, cy 50, a 0.5, h 80
C = [300.0, 300.0, 340.0, 380.0]
D = [600.0, 100.0, 650.0, 200.0]


def _run(tracker, frames):
    """frames: per frame a list of (box, score[, class]) -> per frame the output ids."""
    out = []
    for dets in frames:
        boxes = np.array([d[0] for d in dets], float).reshape(-1, 4)
        scores = np.array([d[1] for d in dets], float)
        classes = np.array([d[2] if len(d) > 2 else 0 for d in dets], int)
        out.append(tracker.update(boxes, scores, classes).ids.tolist())
    return out


def test_defaults_are_the_references():
    t = ByteTracker()
    assert (t.track_thresh, t.low_thresh, t.match_thresh) == (0.5, 0.1, 0.8)
    assert t.det_thresh == pytest.approx(0.6) and t.max_time_lost == 30
    assert (t.second_match_thresh, t.unconfirmed_match_thresh, t.duplicate_thresh) == (0.5, 0.7, 0.15)
    assert t.fuse_score and t.pixel_inclusive_iou and not t.class_agnostic
    assert ByteTracker(frame_rate=15).max_time_lost == 15
    assert ByteTracker(frame_rate=25, track_buffer=30).max_time_lost == 25


def test_output_box_is_the_kalman_state_not_the_detection():
    t = ByteTracker()
    first = t.update(np.array([B]), np.array([0.9]))
    assert first.ids.tolist() == [1]             # the first frame confirms at once
    np.testing.assert_allclose(first.boxes, [B])
    shifted = np.array([B]) + [4, 0, 4, 0]
    second = t.update(shifted, np.array([0.8]))
    # Gain on x: (64 + 25 + 16) / (105 + 16) = 105 / 121 of the 4 px innovation.
    np.testing.assert_allclose(second.boxes, np.array([B]) + [420 / 121, 0, 420 / 121, 0], atol=1e-9)
    assert second.scores.tolist() == [0.8] and second.classes.tolist() == [0]


def test_a_low_score_detection_keeps_a_track_alive():
    frames = [[(B, 0.9)]] + [[(np.add(B, [2 * k, 0, 2 * k, 0]), 0.2)] for k in range(1, 5)]
    assert _run(ByteTracker(), frames) == [[1]] * 5
    # Under low_thresh (0.1) it is not a detection at all: the track is lost, not output.
    frames = [[(B, 0.9)]] + [[(B, 0.05)]] * 3
    assert _run(ByteTracker(), frames) == [[1], [], [], []]
    # The second association is for tracked tracks only: a low score does not re-find a lost one,
    # a high one does, with its old id.
    assert _run(ByteTracker(), [[(B, 0.9)], [], [(B, 0.3)], [(B, 0.9)]]) == [[1], [], [], [1]]


def test_new_tracks_only_from_high_detections_above_det_thresh():
    t = ByteTracker()
    # 0.3: low; 0.55: high (> 0.5) but under det_thresh 0.6; 0.65 starts a track, unconfirmed
    # (not output) until it is matched on the next frame.
    assert _run(t, [[], [(B, 0.3)], [(B, 0.55)], [(B, 0.65)], [(B, 0.65)]]) == [[], [], [], [], [1]]
    # An unconfirmed track that is not matched on the next frame is removed.
    t = ByteTracker()
    assert _run(t, [[], [(B, 0.9)], [], [(C, 0.9)], [(C, 0.9)]]) == [[], [], [], [], [2]]
    assert [tr.track_id for tr in t.tracked_tracks] == [2] and t.lost_tracks == []
    # A score exactly at track_thresh is neither high nor low.
    assert _run(ByteTracker(), [[(B, 0.9)], [(B, 0.5)]]) == [[1], []]


def test_lost_tracks_expire_after_max_time_lost():
    def last_seen_again(gap, **kw):
        frames = [[(B, 0.9)]] + [[]] * (gap - 1) + [[(B, 0.9)], [(B, 0.9)]]
        return _run(ByteTracker(**kw), frames)[-2:]
    # Seen on frame 1, lost from frame 2; removed on frame 1 + 30 + 1 = 32, where the
    # association (before the expiry check) can still re-find it; as in the reference, a track
    # removed on frame 32 is still matched on frame 33, and gone from frame 34.
    for gap in (10, 30, 31, 32):
        assert last_seen_again(gap) == [[1], [1]], gap
    assert last_seen_again(33) == [[], [2]]
    assert last_seen_again(50) == [[], [2]]
    # frame_rate scales the buffer: 15 fps -> 15 frames.
    assert last_seen_again(17, frame_rate=15) == [[1], [1]]
    assert last_seen_again(18, frame_rate=15) == [[], [2]]
    t = ByteTracker()
    _run(t, [[(B, 0.9)]] + [[]] * 31)
    assert len(t.lost_tracks) == 1                # removed on frame 32, dropped on frame 33
    _run(t, [[]])
    assert t.lost_tracks == [] and t.tracked_tracks == []


def test_a_track_refound_after_its_removal_is_dropped_when_lost_again():
    # The reference keeps every removed id and subtracts them from the lost list.
    frames = [[(B, 0.9)]] + [[]] * 31 + [[(B, 0.9)], [], [(B, 0.9)], [(B, 0.9)]]
    assert _run(ByteTracker(), frames)[-4:] == [[1], [], [], [2]]
    # A track never removed is re-found after the same one-frame gap.
    frames = [[(B, 0.9)]] + [[]] * 10 + [[(B, 0.9)], [], [(B, 0.9)]]
    assert _run(ByteTracker(), frames)[-3:] == [[1], [], [1]]


def test_output_order_tracked_then_new_then_refound():
    frames = [[(B, 0.9), (C, 0.9)], [(B, 0.9), (D, 0.9)], [(B, 0.9), (C, 0.9), (D, 0.9)]]
    assert _run(ByteTracker(), frames) == [[1, 2], [1], [1, 3, 2]]


def test_class_aware_and_agnostic():
    frames = [[(B, 0.9, 0)], [(B, 0.9, 1)], [(B, 0.9, 1)]]
    aware = ByteTracker()
    assert _run(aware, frames) == [[1], [], [2]]        # class 1 starts its own track
    assert aware.lost_tracks[0].track_id == 1            # not a duplicate of the class-1 track
    agnostic = ByteTracker(class_agnostic=True)
    outs = [agnostic.update(np.array([b]), np.array([s]), np.array([c])) for [(b, s, c)] in frames]
    assert [o.ids.tolist() for o in outs] == [[1], [1], [1]]
    assert [o.classes.tolist() for o in outs] == [[0], [1], [1]]   # the last matched class
    # Two objects of different classes on the same spot: one track each, neither switches.
    frames = [[(B, 0.9, 0), (np.add(B, [1, 0, 1, 0]), 0.8, 1)]] * 3
    t = ByteTracker()
    outs = [t.update(np.array([d[0] for d in f]), np.array([d[1] for d in f]), np.array([d[2] for d in f]))
            for f in frames]
    assert [o.ids.tolist() for o in outs] == [[1, 2]] * 3
    assert [o.classes.tolist() for o in outs] == [[0, 1]] * 3


def test_ids_count_per_tracker_instance():
    a, b = ByteTracker(), ByteTracker()
    assert _run(a, [[(B, 0.9), (C, 0.9)]]) == [[1, 2]]
    assert _run(b, [[(D, 0.9)]]) == [[1]]                # not 3: no counter shared across trackers
    assert _run(a, [[(B, 0.9), (C, 0.9)]]) == [[1, 2]]
    a.reset()
    assert a.frame_id == 0 and _run(a, [[(D, 0.9)]]) == [[1]]


def test_empty_frames_and_inputs():
    t = ByteTracker()
    out = t.update(np.zeros((0, 4)), np.zeros(0))
    assert len(out) == 0 and out.boxes.shape == (0, 4) and out.ids.dtype == np.int64
    out = t.update([B], [0.9])                            # lists, no classes
    assert len(out) == 0 and len(t.tracked_tracks) == 1  # frame 2: unconfirmed
    assert t.update([B], [0.9], None).ids.tolist() == [1]


def test_detection_boxes_option_reports_the_matched_detection_and_keeps_the_ids():
    """output_boxes="detection": the same tracks and ids as the default, each box the detection it
    matched on that frame (Kalman states by default); an unknown choice is refused."""
    stream = make_stream(**STREAMS["sparse"]["stream"])
    kalman, det = ByteTracker(), ByteTracker(output_boxes="detection")
    moved = 0
    for boxes, scores, classes in stream:
        a, b = kalman.update(boxes, scores, classes), det.update(boxes, scores, classes)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
        for box in b.boxes:         # every reported box is one of this frame's detections
            assert np.isclose(boxes, box, atol=1e-9).all(axis=1).any()
        moved += int(not np.allclose(a.boxes, b.boxes))
    assert moved > len(stream) // 2            # and the Kalman states are not those boxes
    with pytest.raises(ValueError, match="output_boxes"):
        ByteTracker(output_boxes="mean")
