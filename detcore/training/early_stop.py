"""The one best-metric / early-stopping rule both trainers follow (YOLOX's ``best_metric`` +
``patience``, SSD's ``--best-metric`` + ``--patience``): which evaluation is the best (its
checkpoint is ``best_ckpt.pth`` / ``ssd300_best.pth``) and when a run stops. Its state travels in
every checkpoint, so a resumed run continues the same count."""
import math

from loguru import logger

from accel.errors import UserError

# metric -> whether a larger value is better
BEST_METRICS = {"ap50_95": True, "ap50": True, "val_loss": False}


class MetricWatch:
    """The best value of one evaluation metric so far and, with ``patience`` N > 0, the early
    stop after N evaluations in a row without improving it (0: never stops early).

    ``metric``: "ap50_95" or "ap50" (higher is better) or "val_loss" (the total validation loss,
    lower is better). The first finite value always improves; a non-finite one never does (a
    diverging run counts towards its stop). Its state (best value, its epoch, evaluations since)
    is part of the trainers' checkpoints, so a resumed run stops at the evaluation an
    uninterrupted one stops at. ``names`` spell the two settings in one-line errors.
    """

    def __init__(self, metric="ap50_95", patience=0, names=("best_metric", "patience")):
        self.names = names
        if metric not in BEST_METRICS:
            raise UserError(f"{names[0]} {metric!r}: expected one of {', '.join(BEST_METRICS)}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise UserError(f"{names[1]} {patience!r}: expected a whole number of evaluations >= 0 "
                            "(0 = no early stopping)")
        self.metric, self.patience = metric, patience
        self.best, self.best_epoch, self.stale = None, None, 0

    def pick(self, ap50_95, ap50, val_loss=None):
        """The watched metric's value of one evaluation; one line when it is the validation loss
        and the evaluator computed none (an evaluator without the loss hook)."""
        if self.metric == "val_loss":
            if val_loss is None:
                raise UserError(f"{self.names[0]} val_loss: this evaluation computes no validation "
                                "loss; use ap50_95 or ap50")
            return float(val_loss)
        return float(ap50_95 if self.metric == "ap50_95" else ap50)

    def update(self, value, epoch):
        """Record one evaluation (``epoch`` 1-based); True when it is the new best."""
        value = float(value)
        higher = BEST_METRICS[self.metric]
        better = math.isfinite(value) and (self.best is None or
                                           (value > self.best if higher else value < self.best))
        if better:
            self.best, self.best_epoch, self.stale = value, int(epoch), 0
        else:
            self.stale += 1
        return better

    @property
    def stopped(self):
        """Whether ``patience`` evaluations in a row have not improved the metric."""
        return self.patience > 0 and self.stale >= self.patience

    def best_text(self):
        """"0.4123 at epoch 7" (the epoch is unknown after resuming an older checkpoint)."""
        if self.best is None:
            return "none (no finite value yet)"
        where = f"epoch {self.best_epoch}" if self.best_epoch is not None else "an earlier epoch"
        return f"{self.best:.4f} at {where}"

    def stop_line(self):
        """The one log line of an early stop: the best value and where it was reached."""
        return (f"early stop: {self.metric} did not improve in {self.stale} evaluations "
                f"({self.names[1]} {self.patience}); best {self.metric} {self.best_text()}")

    def state_dict(self):
        return {"metric": self.metric, "best": self.best, "best_epoch": self.best_epoch,
                "stale": self.stale}

    def load_state_dict(self, state):
        """Continue a checkpoint's record; one watching another metric is not continued (its
        best value means something else), said in one line."""
        if not isinstance(state, dict):
            return
        if state.get("metric") != self.metric:
            logger.info(f"{self.names[0]}: the checkpoint watched {state.get('metric')}, this run "
                        f"watches {self.metric}: its best value and patience count start afresh")
            return
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.best_epoch = None if state.get("best_epoch") is None else int(state["best_epoch"])
        self.stale = int(state.get("stale", 0))
