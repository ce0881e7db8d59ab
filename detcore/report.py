"""What a run reports besides its log: ``results.csv`` + ``results.png`` (one row / one point
per epoch, updated every epoch) and, on request, TensorBoard or Weights & Biases scalars.
Only the main process writes; matplotlib, tensorboard and wandb are imported when first used."""
import csv
import io

from pathlib import Path

from loguru import logger

from accel.checkpoint import replace_atomic
from accel.errors import UserError

CSV_NAME, PNG_NAME = "results.csv", "results.png"


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


class RunReport:
    """results.csv/png in ``out_dir``, plus ``kind`` = "tensorboard" / "wandb" scalars."""

    def __init__(self, out_dir, enabled=True, kind=None, wandb_options=None, config=None, start_epoch=0):
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.rows = self._previous_rows(start_epoch) if enabled else []
        self.tb = self.wandb = None
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
            self.wandb = wandb.init(config=config or {}, dir=str(self.out_dir), **(wandb_options or {}))
        else:
            raise UserError(f"--logger {kind}: expected tensorboard or wandb")

    def _previous_rows(self, start_epoch):
        """Rows of the epochs before ``start_epoch`` (a resumed run continues the table)."""
        path = self.out_dir / CSV_NAME
        if not start_epoch or not path.is_file():
            return []
        with open(path, newline="") as f:
            return [r for r in csv.DictReader(f) if int(float(r["epoch"])) <= start_epoch]

    def scalars(self, step, values):
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def epoch(self, row):
        """Add one epoch's row (dict: epoch, losses, lr, AP50, AP50_95, images/s, wall time)."""
        if not self.enabled:
            return
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        replace_atomic(self.out_dir / CSV_NAME, text.getvalue().encode())
        self._plot(columns)

    def _plot(self, columns):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            logger.warning("matplotlib is not installed: results.png not drawn (pip install matplotlib)")
            return

        def series(key):
            return [(float(r["epoch"]), float(r[key])) for r in self.rows if r.get(key) not in (None, "")]

        fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 4))
        for key in [c for c in columns if "loss" in c]:
            pts = series(key)
            if pts:
                ax_loss.plot(*zip(*pts), marker=".", label=key)
        for key in ("AP50", "AP50_95"):
            pts = series(key) if key in columns else []
            if pts:
                ax_ap.plot(*zip(*pts), marker="o", label=key)
        ax_loss.set(xlabel="epoch", ylabel="loss (last iteration of the epoch)", title="training loss")
        ax_ap.set(xlabel="epoch", ylabel="COCO AP (val)", title="validation AP", ylim=(0, 1))
        for ax in (ax_loss, ax_ap):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        replace_atomic(self.out_dir / PNG_NAME, buf.getvalue())

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()



