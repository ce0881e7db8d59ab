"""Early stopping (``patience``) and the best checkpoint (``best_metric``) of both trainers, the
epoch-mean training loss and the validation loss in results.csv, and resume keeping the count.

The tiny runs evaluate every epoch with a confidence threshold no detection passes (YOLOX
``test_conf 1.0``, SSD ``--nms-valid-thresh 1.0``): AP is 0 at every evaluation, so by hand the
first evaluation is the best (epoch 1) and ``patience 2`` stops after epoch 3 of 5. A resumed run
that lost the count (or the best value) would run to epoch 4 (or 5) instead.
"""
import csv
import math

import pytest
import torch

from accel.errors import UserError
from detcore.training.early_stop import MetricWatch


def test_metric_watch_by_hand():
    ap = MetricWatch("ap50", patience=2)
    assert [ap.update(v, e) for e, v in enumerate([0.1, 0.3, 0.3, float("nan"), 0.2], 1)] == \
        [True, True, False, False, False]
    assert (ap.best, ap.best_epoch, ap.stale, ap.stopped) == (0.3, 2, 3, True)
    assert ap.stop_line() == ("early stop: ap50 did not improve in 3 evaluations (patience 2); "
                              "best ap50 0.3000 at epoch 2")
    loss = MetricWatch("val_loss", patience=1)
    assert loss.pick(0.5, 0.7, val_loss=2.5) == 2.5 and MetricWatch("ap50").pick(0.5, 0.7) == 0.7
    assert [loss.update(v, e) for e, v in enumerate([3.0, 2.0, 2.5], 1)] == [True, True, False]
    assert loss.stopped and loss.best == 2.0
    off = MetricWatch("ap50_95", patience=0)
    for e in range(1, 10):
        off.update(0.0, e)
    assert not off.stopped                                    # 0 = never stops early
    again = MetricWatch("val_loss", patience=1)
    again.load_state_dict(loss.state_dict())
    assert (again.best, again.best_epoch, again.stale) == (2.0, 2, 1)
    other = MetricWatch("ap50_95", patience=1)
    other.load_state_dict(loss.state_dict())                 # another metric: starts afresh
    assert (other.best, other.stale) == (None, 0)
    with pytest.raises(UserError, match="computes no validation loss"):
        MetricWatch("val_loss").pick(0.1, 0.2, None)


def built(text):
    """``text`` as a string built at run time: flags and exp values are not interned literals, so
    a comparison by identity (``is``) instead of equality would fail on them."""
    return "".join(list(text))


def test_pick_reads_the_watched_metric():
    """Each metric reads its own value of an evaluation (AP50:95 and AP50 are not swapped or
    merged), also for metric names that arrive as run-time strings."""
    assert MetricWatch(built("ap50_95")).pick(0.31, 0.52, 1.7) == 0.31
    assert MetricWatch(built("ap50")).pick(0.31, 0.52, 1.7) == 0.52
    assert MetricWatch(built("val_loss")).pick(0.31, 0.52, 1.7) == 1.7


def test_ap_metrics_improve_upwards_and_the_loss_downwards_strictly():
    for metric in ("ap50_95", "ap50"):
        w = MetricWatch(metric)
        assert [w.update(v, e) for e, v in enumerate([0.2, 0.1, 0.3, 0.3], 1)] == [True, False, True, False]
    loss = MetricWatch("val_loss")
    assert [loss.update(v, e) for e, v in enumerate([2.0, 2.0, 2.5, 1.5], 1)] == [True, False, False, True]


def test_default_watch_never_stops_early():
    w = MetricWatch()
    assert (w.metric, w.patience) == ("ap50_95", 0)
    for e in range(1, 20):
        w.update(0.0, e)
    assert not w.stopped


def test_a_checkpoint_of_another_metric_is_not_continued_whatever_the_names_order(log_lines):
    """The metric names compared for equality, not order: 'ap50' sorts before 'ap50_95' and
    'val_loss' after both; the line names the setting's own spelling (``names[0]``)."""
    for mine, theirs in (("ap50_95", "ap50"), ("ap50", "ap50_95"), ("ap50", "val_loss")):
        w = MetricWatch(built(mine), patience=3, names=("--best-metric", "--patience"))
        w.load_state_dict({"metric": built(theirs), "best": 0.9, "best_epoch": 4, "stale": 2})
        assert (w.best, w.best_epoch, w.stale) == (None, None, 0), (mine, theirs)
    assert log_lines[-1].startswith("--best-metric: the checkpoint watched val_loss, this run watches ap50")
    same = MetricWatch(built("ap50"))
    same.load_state_dict({"metric": built("ap50"), "best": 0.9, "best_epoch": 4})    # an older file: no stale
    assert (same.best, same.best_epoch, same.stale) == (0.9, 4, 0)


def test_missing_validation_loss_names_the_setting():
    with pytest.raises(UserError, match=r"^--best-metric val_loss: this evaluation computes no validation loss"):
        MetricWatch("val_loss", names=("--best-metric", "--patience")).pick(0.1, 0.2, None)


@pytest.mark.parametrize("metric,patience,msg", [("foo", 0, "best_metric 'foo': expected one of"),
                                                 ("ap50", -1, "patience -1: expected a whole number"),
                                                 ("ap50", 1.5, "patience 1.5")])
def test_metric_watch_refuses_bad_settings(metric, patience, msg):
    with pytest.raises(UserError, match=msg):
        MetricWatch(metric, patience)


@pytest.mark.parametrize("opts,msg", [(["patience", "-1"], "must be >= 0"),
                                      (["best_metric", "foo"], "expected one of ap50_95, ap50, val_loss")])
def test_yolox_overrides_refuse_bad_values(opts, msg):
    from yolox.exp import get_exp

    exp = get_exp(exp_name="yolox-nano")
    assert (exp.patience, exp.best_metric) == (0, "ap50_95")
    with pytest.raises(UserError, match=msg):
        exp.merge(opts)


def test_patience_and_best_metric_do_not_block_a_resume_by_itself():
    """Decision: they decide when a run stops, not what any step computes (as --threshold), so a
    run resumed by itself after a preemption may change them."""
    from ssd.checkpoint import RUN_VOLATILE as SSD_VOLATILE
    from yolox.core.checkpoint import RUN_VOLATILE as YOLOX_VOLATILE

    for volatile in (SSD_VOLATILE, YOLOX_VOLATILE):
        assert {"patience", "best_metric"} <= set(volatile)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Killed(Exception):
    pass


# ----------------------------------------------------------------------------------- YOLOX
@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    from conftest import load_make_shapes

    return load_make_shapes()(tmp_path_factory.mktemp("early_stop"), num_train=4, num_val=2, seed=0)


@pytest.fixture(scope="module")
def yolox_runs(tiny_shapes, tmp_path_factory):
    """(straight run's folder, its per-step losses, split run's folder): the same 5-epoch
    patience-2 run straight, and killed after epoch 2 then ``--resume``d."""
    from yolox.core.trainer import Trainer
    from yolox_tools import SHAPES_EXP, TINY, load_tool

    train = load_tool("train")
    out = tmp_path_factory.mktemp("yolox_early")
    flags = ["-f", SHAPES_EXP, "-b", "2", "--data_dir", str(tiny_shapes), "--seed", "3"]
    opts = [*TINY, "max_epoch", "5", "no_aug_epochs", "0", "eval_interval", "1", "test_conf", "1.0",
            "save_history_ckpt", "False", "patience", "2"]
    real_step, real_after = Trainer.train_step, Trainer.after_epoch
    steps = []

    def recording_step(self, inps, targets):
        outputs = real_step(self, inps, targets)
        steps.append((self.epoch, float(outputs["total_loss"])))      # the test's own host sync
        return outputs

    def kill_after_second(self):
        real_after(self)
        if self.epoch == 1:
            raise Killed

    try:
        Trainer.train_step = recording_step
        train.main([*flags, *opts, "output_dir", str(out / "straight")])
        Trainer.train_step = real_step
        Trainer.after_epoch = kill_after_second
        with pytest.raises(Killed):
            train.main([*flags, *opts, "output_dir", str(out / "split")])
        Trainer.after_epoch = real_after
        train.main([*flags, "--resume", *opts, "output_dir", str(out / "split")])
    finally:
        Trainer.train_step, Trainer.after_epoch = real_step, real_after
    return out / "straight" / "yolox_nano_shapes", steps, out / "split" / "yolox_nano_shapes"


def test_yolox_patience_stops_and_a_resumed_run_stops_at_the_same_evaluation(yolox_runs):
    from detcore.training.checkpoints import load

    straight, _, split = yolox_runs
    for folder in (straight, split):
        # one line (the split folder's log holds the killed run, which never got there, too)
        log = (folder / "train_log.txt").read_text()
        assert log.count("| early stop: ") == 1 and log.count("training done early (patience)") == 1
        assert ("| early stop: ap50_95 did not improve in 2 evaluations (patience 2); "
                "best ap50_95 0.0000 at epoch 1\n") in log
        assert [r["epoch"] for r in rows(folder / "results.csv")] == ["1", "2", "3"]
        latest = load(folder / "latest_ckpt.pth")
        assert latest["start_epoch"] == 3
        assert latest["best_metric"] == {"metric": "ap50_95", "best": 0.0, "best_epoch": 1, "stale": 2}
        assert load(folder / "best_ckpt.pth")["start_epoch"] == 1     # the best evaluation's
    a, b = load(straight / "latest_ckpt.pth"), load(split / "latest_ckpt.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_yolox_results_csv_has_epoch_mean_and_validation_losses(yolox_runs):
    straight, steps, _ = yolox_runs
    table = rows(straight / "results.csv")
    for epoch, row in enumerate(table):
        mine = [v for e, v in steps if e == epoch]
        assert len(mine) == 2                                 # 4 images, batch 2
        assert float(row["total_loss"]) == pytest.approx(sum(mine) / 2, rel=1e-5)   # not the last step's
        for key in ("val/total_loss", "val/iou_loss", "val/conf_loss", "val/cls_loss", "val/l1_loss"):
            assert math.isfinite(float(row[key])), (epoch, key)
        assert float(row["val/total_loss"]) > 0
    assert mine[0] != mine[1]
    assert (straight / "results.png").stat().st_size > 1000


REPORT_FILES = ("labels.png", "results_per_class.csv", "confusion_matrix.csv", "confusion_matrix.png",
                "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png")


def check_diagnostics(folder, classes):
    """What a run that ended by an early stop leaves, as a normal end does: the labels plot of
    the start, one per-class block per evaluation, and the final evaluation's plots, even though
    nothing was detected (test_conf 1.0): a report never fails a run."""
    for name in REPORT_FILES:
        assert (folder / name).stat().st_size > 0, name
    table = rows(folder / "results_per_class.csv")
    assert [r["epoch"] for r in table] == [e for e in "123" for _ in range(classes + 1)]
    assert {r["class"] for r in table} >= {"all", "circle"}
    assert all(float(r["AP50"]) == 0 for r in table if r["instances"] != "0")
    log = (folder / "train_log.txt").read_text()
    assert "data: train" in log and "per class at IoU 0.50, confidence" in log
    # results.csv: P and R of "all" beside AP (nothing detected: 0)
    assert [(r["P"], r["R"]) for r in rows(folder / "results.csv")] == [("0", "0")] * 3


def test_yolox_early_stop_ends_with_the_per_class_report_and_plots(yolox_runs):
    straight, _, split = yolox_runs
    check_diagnostics(straight, 4)
    check_diagnostics(split, 4)


# ----------------------------------------------------------------------------------- SSD
@pytest.fixture(scope="module")
def ssd_runs(tmp_path_factory):
    """The same 5-epoch --patience 2 SSD run straight and killed after epoch 2, then resumed
    with --checkpoint; returns (straight folder, split folder)."""
    from conftest import load_make_shapes
    from ssd import train as ssd_train
    from ssd.engine import SSDRun

    data = load_make_shapes()(tmp_path_factory.mktemp("ssd_early_data"), num_train=2, num_val=1, seed=1)
    out = tmp_path_factory.mktemp("ssd_early")
    argv = ["-d", str(data), "-b", "1", "-e", "5", "--val-interval", "1", "--num-workers", "0",
            "--pretrained-backbone", "none", "-s", "0", "--nms-valid-thresh", "1.0", "--patience", "2",
            "--log-interval", "100"]
    real = SSDRun.train_epoch

    def kill_after_second(self, epoch):
        result = real(self, epoch)
        if epoch == 1:
            raise Killed
        return result

    try:
        ssd_train.main([*argv, "--output-dir", str(out / "straight")])
        SSDRun.train_epoch = kill_after_second
        with pytest.raises(Killed):
            ssd_train.main([*argv, "--output-dir", str(out / "split")])
        SSDRun.train_epoch = real
        ssd_train.main([*argv, "--output-dir", str(out / "split"),
                        "--checkpoint", str(out / "split" / "ssd300_latest.pth")])
    finally:
        SSDRun.train_epoch = real
    return out / "straight", out / "split"


def test_ssd_patience_stops_and_a_resumed_run_stops_at_the_same_evaluation(ssd_runs):
    straight, split = ssd_runs
    for folder in (straight, split):
        log = (folder / "train_log.txt").read_text()
        assert log.count("| early stop: ") == 1
        assert ("| early stop: ap50_95 did not improve in 2 evaluations (--patience 2); "
                "best ap50_95 0.0000 at epoch 1\n") in log
        iters = torch.load(folder / "ssd300_latest.pth", weights_only=True)["iteration"]
        assert iters % 3 == 0
        assert (f"| finished at iteration {iters}: 3 epochs done, stopped early: --patience 2 evaluations "
                "without a better ap50_95 (best 0.0000 at epoch 1), mAP target 0.23 not reached "
                "(MLPerf status: aborted); ") in log
        table = rows(folder / "results.csv")
        assert [r["epoch"] for r in table] == ["1", "2", "3"]
        assert all(math.isfinite(float(r["val/loss"])) and float(r["val/loss"]) > 0 for r in table)
        assert all(float(r["val/loss"]) == pytest.approx(float(r["val/loc_loss"]) + float(r["val/conf_loss"]),
                                                         rel=1e-4) for r in table)
        latest = torch.load(folder / "ssd300_latest.pth", weights_only=True)
        assert latest["best_metric"] == {"metric": "ap50_95", "best": 0.0, "best_epoch": 1, "stale": 2}
        best = torch.load(folder / "ssd300_best.pth", weights_only=True)
        assert best["epoch"] == 1 and best["best_metric"]["stale"] == 0       # written at epoch 1
        assert '"status": "aborted"' in (folder / "mlperf_ssd.log").read_text()   # MLPerf: unchanged
    a = torch.load(straight / "ssd300_latest.pth", weights_only=True)["model"]
    b = torch.load(split / "ssd300_latest.pth", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ssd_early_stop_ends_with_the_per_class_report_and_plots(ssd_runs):
    straight, split = ssd_runs
    check_diagnostics(straight, 4)
    check_diagnostics(split, 4)


@pytest.mark.parametrize("flags,msg", [(["--patience", "-1"], "--patience -1: expected a whole number"),
                                       (["--best-metric", "foo"], "--best-metric 'foo': expected one of")])
def test_ssd_flags_refuse_bad_values(flags, msg, tmp_path, capsys):
    from ssd import train as ssd_train

    with pytest.raises(SystemExit) as exc:
        ssd_train.main(["-d", str(tmp_path), *flags])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert exc.value.code == 2 and len(err) == 1 and msg in err[0]
