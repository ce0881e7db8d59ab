"""Tracking metrics through TrackEval (detcore.evaluation.tracking): hand-computed values on a
two-object scene, and MOTA / IDF1 cross-checked against motmetrics on the same files."""
import numpy as np
import pytest

pytest.importorskip("trackeval")
from detcore.evaluation import tracking as tr  # noqa: E402


def two_objects(frames=20):
    """Object 1 moves right, object 2 left (class 2), one row per frame each, all considered."""
    rows = []
    for f in range(1, frames + 1):
        rows.append([f, 1, 10 + 3 * f, 20, 30, 40, 1, 1, 1.0])
        rows.append([f, 2, 200 - 3 * f, 60, 30, 40, 1, 2, 1.0])
    return np.array(rows, float)


def as_result(gt):
    return np.column_stack([gt[:, :6], np.ones(len(gt)), gt[:, 7]])


def test_perfect_tracks_score_one_and_an_id_switch_costs_what_the_formulas_say():
    gt = two_objects()
    assert tr.evaluate({"a": (gt, as_result(gt), 20)})["a"] == {
        "HOTA": 1.0, "DetA": 1.0, "AssA": 1.0, "MOTA": 1.0, "IDF1": 1.0, "IDSW": 0, "FP": 0, "FN": 0}
    res = as_result(gt)
    res[(res[:, 0] > 10) & (res[:, 1] == 1), 1] = 7        # object 1 gets a new id half-way
    s = tr.evaluate({"a": (gt, res, 20)})["a"]
    # IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN) = 60 / 80; MOTA = 1 - 1 switch / 40 objects;
    # AssA = (20 TPs at 1/2 + 20 at 1) / 40; HOTA = sqrt(DetA * AssA)
    assert (s["IDSW"], s["FP"], s["FN"]) == (1, 0, 0)
    assert s["IDF1"] == pytest.approx(0.75) and s["MOTA"] == pytest.approx(0.975)
    assert s["AssA"] == pytest.approx(0.75) and s["HOTA"] == pytest.approx(0.75 ** 0.5)


def test_misses_false_positives_ignore_regions_and_per_class():
    gt = two_objects()
    gt[(gt[:, 0] <= 5) & (gt[:, 1] == 2), 6] = 0            # object 2 is an ignore region for 5 frames
    res = as_result(gt)[gt[:, 0] > 2]                       # frames 1-2 not tracked at all
    extra = np.array([[4, 99, 400, 400, 20, 20, 1, 1]], float)
    s, per_class = tr.evaluate({"a": (gt, np.vstack([res, extra]), 20)}, by_class=True)
    # misses: object 1 in frames 1-2 (object 2's are ignored there); FP: the stray box
    assert (s["a"]["FN"], s["a"]["FP"]) == (2, 1)
    assert per_class[2]["FN"] == 0 and per_class[2]["FP"] == 0 and per_class[1]["FN"] == 2


def test_mota_and_idf1_equal_motmetrics_on_the_same_files(tmp_path, monkeypatch):
    mm = pytest.importorskip("motmetrics")
    if not hasattr(np, "asfarray"):        # motmetrics 1.4.0 (its last release) calls np.asfarray
        monkeypatch.setattr(np, "asfarray", lambda a, dtype=np.float64: np.asarray(a, dtype=dtype), raising=False)
    rng = np.random.default_rng(3)
    gt = two_objects(40)
    res = as_result(gt)
    res[:, 2:4] += rng.normal(0, 2.0, (len(res), 2))        # jittered boxes
    res = res[rng.random(len(res)) > 0.1]                    # 10% missed
    res[(res[:, 0] > 25) & (res[:, 1] == 2), 1] = 5           # one switch
    ours = tr.evaluate({"s": (gt, res, 40)})["s"]
    tr.write_mot_rows(tmp_path / "res.txt", res[:, 0], res[:, 1], res[:, 2:6], res[:, 6])
    np.savetxt(tmp_path / "gt.txt", gt, fmt="%d,%d,%.3f,%.3f,%.3f,%.3f,%d,%d,%.3f")
    gt_df = mm.io.loadtxt(str(tmp_path / "gt.txt"), fmt="mot15-2D", min_confidence=1)
    ts_df = mm.io.loadtxt(str(tmp_path / "res.txt"), fmt="mot15-2D")
    acc = mm.utils.compare_to_groundtruth(gt_df, ts_df, "iou", distth=0.5)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="s")
    assert ours["MOTA"] == pytest.approx(float(summary["mota"].iloc[0]), abs=1e-6)
    assert ours["IDF1"] == pytest.approx(float(summary["idf1"].iloc[0]), abs=1e-6)
    assert ours["IDSW"] == int(summary["num_switches"].iloc[0])


def test_a_malformed_result_line_is_one_line(tmp_path):
    bad = tmp_path / "SEQ.txt"
    bad.write_text("1,1,10,10,5,5,1,-1,-1,-1\n2,1,ten,10,5,5\n")
    with pytest.raises(Exception, match=r"SEQ\.txt:2: not a MOTChallenge line"):
        tr.read_mot_rows(bad)
