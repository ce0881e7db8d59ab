"""What both trainers record around an epoch, in one place: the epoch-mean training losses and
throughput of results.csv/png, the handling of an evaluation result (best-metric watch, report
scalars, per-class csv), the epoch's row, the plots of the run's last evaluation, and the check
that stops a run on a non-finite loss. The trainers keep only what differs: how a step and an
evaluation run, and how their log lines read (upstream YOLOX's and the MLPerf reference's)."""
import math
import time

from loguru import logger

from accel.errors import UserError
from detcore.evaluation import report as eval_report
from detcore.training.report import LossMean, epoch_row


def require_finite(losses, where, checkpoint, hint=None):
    """``losses`` ({name: 0-dim tensor or number}) as floats; a non-finite one stops the run,
    before anything is saved, with one line naming ``where`` (e.g. "epoch 3, iteration 25") and
    the last good ``checkpoint`` (plus ``hint``, what to change before resuming)."""
    values = {k: float(v) for k, v in losses.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise UserError(f"non-finite loss {bad} at {where}; last good checkpoint: {checkpoint}"
                        + (f" ({hint})" if hint else ""))
    return values


class Evaluation:
    """One evaluation as the book keeps it: AP50:95, AP50, the validation losses ({} without)
    and the scorer's result (per-class statistics, P/R; None from a custom evaluator)."""

    def __init__(self, ap50_95, ap50, val_loss=None, result=None):
        self.ap50_95, self.ap50 = float(ap50_95), float(ap50)
        self.val_loss, self.result = dict(val_loss or {}), result


class EpochBook:
    """The per-epoch record of one run (``report``: its ``RunReport``; ``watch``: its
    ``MetricWatch``; ``loss_keys``: the training loss terms of results.csv; ``val_keys``: the
    validation loss terms, written as ``val/`` columns (default: the training terms);
    ``total_key``: the validation loss the watch's ``val_loss`` metric reads).

    Call ``start`` at each epoch's beginning, ``step`` after each training step (device
    tensors, no host sync), ``evaluated`` with each evaluation, ``end`` once the epoch's
    checkpoint is written, and ``final_plots`` when the run ends."""

    def __init__(self, report, watch, out_dir, loss_keys, total_key, val_keys=None, main=True):
        self.report, self.watch, self.out_dir, self.main = report, watch, out_dir, main
        self.loss_keys, self.total_key = tuple(loss_keys), total_key
        self.val_keys = tuple(val_keys or loss_keys)
        self.losses = LossMean(self.loss_keys)
        self.train_t0 = time.time()
        self.last = None               # the run's newest Evaluation
        self.start()

    def start(self):
        self.losses.reset()
        self.t0, self.images, self.evaluation = time.time(), 0, None

    def step(self, losses, images):
        """One training step: its loss dict (tensors, summed on the device) and image count."""
        self.losses.add(losses)
        self.images += images

    def evaluated(self, epoch, evaluation):
        """Handle one ``Evaluation`` of (1-based) ``epoch``: the watch is updated, the report
        gets its scalars (AP, ``val/`` losses, per-class AP) and the main process writes the
        per-class csv beside results.csv and, when the metric improved and the result kept its
        rows, ``best_detections.npy``. Returns whether the watched metric improved."""
        e = evaluation
        improved = self.watch.update(self.watch.pick(e.ap50_95, e.ap50, e.val_loss.get(self.total_key)), epoch)
        self.report.evaluation(epoch, e.ap50, e.ap50_95, e.val_loss, e.result)
        if self.main:
            eval_report.write_evaluation(e.result, self.out_dir, epoch=epoch, plots=False)
            if improved and getattr(e.result, "rows", None) is not None:
                # what tools/compare.py compares runs on: the best evaluation's detections
                eval_report.write_detections(e.result.rows, self.out_dir / eval_report.DETECTIONS_NAME)
        self.evaluation = self.last = e
        return improved

    def end(self, epoch, lr):
        """The epoch's results.csv row (its mean training losses: one host transfer; AP and the
        ``val/`` losses when it was evaluated, blank cells otherwise) and the epoch-mean loss
        scalars. Returns the means."""
        now = time.time()
        means = self.losses.means()
        e = self.evaluation
        self.report.epoch(epoch_row(epoch, means, lr, None if e is None else (e.ap50_95, e.ap50),
                                    self.images / max(now - self.t0, 1e-9), now - self.train_t0,
                                    None if e is None else e.val_loss, self.val_keys,
                                    None if e is None else e.result))
        if means:
            self.report.scalars(epoch, {f"train_epoch_mean/{k}": v for k, v in means.items()})
        return means

    def final_plots(self):
        """The plots and confusion csv of the run's last evaluation (the last epoch's, or the
        early stop's) in the run's folder, main process only."""
        if self.main and self.last is not None and self.last.result is not None:
            for path in eval_report.write_plots(self.last.result, self.out_dir):
                logger.info(f"wrote {path}")
