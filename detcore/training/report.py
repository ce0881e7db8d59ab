"""What a run reports besides its log: ``results.csv`` + ``results.png`` (one row / one point
per epoch, updated every epoch) and, on request, TensorBoard, Weights & Biases or MLflow
(``detcore.training.mlflow_run``: also params and the run's files as artifacts) scalars.
Only the main process writes; matplotlib, tensorboard, wandb and mlflow are imported when first used.

The best-metric / early-stopping rule is ``detcore.training.early_stop``.
"""

import subprocess
from pathlib import Path

import torch

from accel import all_gather_object
from accel.errors import UserError
from detcore.evaluation.report import pr_columns
from detcore.files import format_row, pyplot, read_rows, save_png, write_rows

CSV_NAME, PNG_NAME = "results.csv", "results.png"
VAL_PREFIX = "val/"      # results.csv: the validation twin of a training loss column "x" is "val/x"
# the 12 COCO stats in pycocotools' order, as report scalars "val/coco/<name>"
COCO_STAT_NAMES = ("AP50_95", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LOGGERS = ("tensorboard", "wandb", "mlflow")
# files of a run folder sent as MLflow artifacts at its end (plots: every *.png beside them)
RUN_FILES = ("results.csv", "results_per_class.csv", "confusion_matrix.csv", "best_detections.npy")


def git_commit(folder=None):
    """The checkout's commit (with "+dirty" when files are modified), or None outside a git
    checkout or without git."""
    folder = Path(folder or Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_params(settings, **facts):
    """What a logger records as the run's configuration: the exp values / flags, plus the facts
    (device, world size, data, class names, ...). ``RunReport`` adds the git commit for the
    loggers that record a configuration (wandb, MLflow), so a run without one calls no git."""
    return {**settings, **{k: v for k, v in facts.items() if v is not None}}


def split_wandb_options(opts):
    """Upstream YOLOX's trailing ``wandb-KEY VALUE`` pairs -> (other opts, {KEY: value});
    a value that parses as an int becomes one, as upstream."""
    rest, options = [], {}
    pairs = list(zip(opts[0::2], opts[1::2]))
    for key, value in pairs:
        if str(key).startswith("wandb-"):
            try:
                options[key[len("wandb-"):]] = int(value)
            except ValueError:
                options[key[len("wandb-"):]] = value
        else:
            rest += [key, value]
    if len(opts) % 2:
        rest.append(opts[-1])
    return rest, options


class LossMean:
    """Weighted means of named 0-dim loss tensors, summed where they are (on the device: no
    host sync per step) and converted once by ``means``. Both trainers use it twice:

    - the epoch-mean training loss of results.csv/png (the last step's loss alone is noise):
      weight 1 per step. After a mid-epoch resume the mean covers only the steps this process
      ran, i.e. the resumed part of that epoch (the checkpoint does not carry the partial sum);
      in a multi-process run it is this process's mean (the main process's is reported).
    - the validation loss: each batch's mean loss weighted by its image count, ``means(gather=
      True)`` over every rank's shard, so N processes report a one-process evaluation's mean.
    """

    def __init__(self, keys):
        self.keys = tuple(keys)
        self.reset()

    def reset(self):
        self.totals, self.counts = {}, {}

    def add(self, values, weight=1):
        """Add the ``keys`` that ``values`` holds as tensors (a custom model's loss dict may lack
        a term: it is then left out of the means, not counted as 0)."""
        for k in self.keys:
            v = values.get(k)
            if torch.is_tensor(v):
                v = v.detach().float() * weight
                self.totals[k] = v if k not in self.totals else self.totals[k] + v
                self.counts[k] = self.counts.get(k, 0) + weight

    def means(self, gather=False):
        """{key: float mean} of what was added since ``reset`` ({} when nothing was); with
        ``gather`` (a collective: every rank calls) over every rank's sums."""
        local = {}
        if self.totals:      # one transfer for all keys
            values = torch.stack([t.reshape(()) for t in self.totals.values()]).tolist()
            local = {k: (v, self.counts[k]) for k, v in zip(self.totals, values)}
        parts = all_gather_object(local) if gather else [local]
        out = {}
        for k in self.keys:
            count = sum(p[k][1] for p in parts if k in p)
            if count:
                out[k] = sum(p[k][0] for p in parts if k in p) / count
        return out


def loss_pairs(columns):
    """results.csv loss columns as (training column, its ``val/`` twin) pairs, one colour each in
    results.png (training solid, validation dashed: overfitting shows as the two parting); a
    column without its twin pairs with None."""
    losses = [c for c in columns if "loss" in c]
    train = [c for c in losses if not c.startswith(VAL_PREFIX)]
    pairs = [(c, VAL_PREFIX + c if VAL_PREFIX + c in losses else None) for c in train]
    paired = {v for _, v in pairs}
    return pairs + [(None, c) for c in losses if c.startswith(VAL_PREFIX) and c not in paired]


class RunReport:
    """results.csv/png in ``out_dir``, plus ``kind`` = "tensorboard" / "wandb" / "mlflow"
    scalars. ``mlflow``: {"uri": tracking URI or None, "run_id": the run a resumed checkpoint
    names, or None} (``config`` becomes the new run's params)."""

    def __init__(self, out_dir, enabled=True, kind=None, wandb_options=None, config=None, start_epoch=0,
                 mlflow=None):
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.rows = self._previous_rows(start_epoch) if enabled else []
        self.tb = self.wandb = self.mlflow = None
        if not enabled or kind in (None, "loguru"):
            return
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--logger tensorboard needs the tensorboard package "
                                "(pip install tensorboard)") from None
            self.tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        elif kind == "wandb":
            try:
                import wandb
            except ImportError:
                raise UserError("--logger wandb needs the wandb package (pip install wandb)") from None
            self.wandb = wandb.init(config={**(config or {}), "git_commit": git_commit()}, dir=str(self.out_dir),
                                    **(wandb_options or {}))
        elif kind == "mlflow":
            from detcore.training.mlflow_run import MlflowRun
            options = mlflow or {}
            params = {**(config or {}), "git_commit": git_commit()} if options.get("run_id") is None else None
            self.mlflow = MlflowRun(self.out_dir, params, options.get("run_id"), options.get("uri"))
        else:
            raise UserError(f"--logger {kind}: expected one of {', '.join(LOGGERS)}")

    @property
    def mlflow_run_id(self):
        """The MLflow run this report logs to (kept in checkpoints so a resume continues it)."""
        return None if self.mlflow is None else self.mlflow.run_id

    def _previous_rows(self, start_epoch):
        """Rows of the ``start_epoch`` epochs done before (a resumed run continues the table)."""
        return read_rows(self.out_dir / CSV_NAME, before_epoch=start_epoch + 1) if start_epoch else []

    def scalars(self, step, values):
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)
        if self.mlflow is not None:
            self.mlflow.metrics(step, values)

    def evaluation(self, epoch, ap50, ap50_95, val_loss=None, result=None):
        """The scalars of one evaluation: COCO AP50 and AP50:95, the 12 COCO stats (with a
        result that has them), the ``val/`` losses and the per-class P, R and APs."""
        classes = getattr(result, "classes", None)
        stats = getattr(result, "stats", None)
        coco = {} if stats is None or len(stats) != 12 else {
            f"val/coco/{name}": float(v) for name, v in zip(COCO_STAT_NAMES, stats)}
        self.scalars(epoch, {"val/COCOAP50": ap50, "val/COCOAP50_95": ap50_95, **coco,
                             **{f"val/{k}": v for k, v in (val_loss or {}).items()},
                             **(classes.scalars() if classes is not None else {})})

    def epoch(self, row):
        """Add one epoch's row (dict: epoch, epoch-mean training losses, lr, AP50, AP50_95,
        images/s, wall time, ``val/`` losses; "" where the epoch was not evaluated)."""
        if not self.enabled:
            return
        self.rows.append(format_row(row))
        write_rows(self.out_dir / CSV_NAME, self.rows)
        self._plot(list(dict.fromkeys(k for r in self.rows for k in r)))

    def _plot(self, columns):
        plt = pyplot("results.png")
        if plt is None:
            return

        def series(key):
            return [(float(r["epoch"]), float(r[key])) for r in self.rows if r.get(key) not in (None, "")]

        fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 4))
        for k, (train_key, val_key) in enumerate(loss_pairs(columns)):
            color = f"C{k % 10}"
            for key, style in ((train_key, "-"), (val_key, "--")):
                pts = series(key) if key else []
                if pts:
                    ax_loss.plot(*zip(*pts), style, marker=".", color=color, label=key)
        for key in ("AP50", "AP50_95"):
            pts = series(key) if key in columns else []
            if pts:
                ax_ap.plot(*zip(*pts), marker="o", label=key)
        ax_loss.set(xlabel="epoch", ylabel="loss (train: epoch mean; val: dashed)",
                    title="training and validation loss")
        positive = [y for c in columns if "loss" in c for _, y in series(c) if y > 0]
        if positive and max(positive) > 100 * min(positive):
            ax_loss.set_yscale("log")     # one diverging term would flatten the others to a line
        ax_ap.set(xlabel="epoch", ylabel="COCO AP (val)", title="validation AP", ylim=(0, 1))
        for ax in (ax_loss, ax_ap):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        fig.tight_layout()
        save_png(fig, self.out_dir / PNG_NAME, dpi=90)

    def close(self, status="FINISHED", best_checkpoint=None, register=None):
        """End the loggers' runs. MLflow also gets the run folder's tables, plots and the best
        checkpoint (when the file exists) as artifacts; ``status`` "KILLED" after a preemption (a
        resume continues), "FAILED" after an error. ``register`` (``--register``): (NAME, export,
        tracking uri); after a finished run the main process exports the best checkpoint with
        ``export(path)`` and registers it as NAME (``mlflow_run.register_export``)."""
        best_checkpoint = best_checkpoint if best_checkpoint is not None and Path(best_checkpoint).exists() else None
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            files = [self.out_dir / name for name in RUN_FILES] + sorted(self.out_dir.glob("*.png"))
            self.mlflow.artifacts(files)
            if best_checkpoint is not None:
                self.mlflow.artifacts([best_checkpoint], "checkpoints")
            self.mlflow.close(status)
        if register is not None and register[0] and self.enabled and status == "FINISHED":
            from detcore.training.mlflow_run import register_export
            register_export(register[0], register[1], self.out_dir, self.mlflow_run_id, register[2])


def epoch_row(epoch, losses, lr, ap, images_per_s, wall_time_s, val_loss, val_keys, result):
    """One results.csv row, the same columns for both detectors: the epoch, its mean training
    losses, the learning rate, ``ap`` = (AP50:95, AP50) or None on an epoch without evaluation
    (blank cells), throughput, wall time, the ``val/`` twin of each of ``val_keys`` and the
    evaluation's P / R at its operating confidence."""
    ap50_95, ap50 = ap if ap is not None else (None, None)
    val_loss = val_loss or {}
    return {"epoch": epoch, **losses, "lr": lr,
            "AP50": "" if ap50 is None else float(ap50), "AP50_95": "" if ap50_95 is None else float(ap50_95),
            "images_per_s": float(images_per_s), "wall_time_s": float(wall_time_s),
            **{f"{VAL_PREFIX}{k}": val_loss.get(k, "") for k in val_keys}, **pr_columns(result)}
