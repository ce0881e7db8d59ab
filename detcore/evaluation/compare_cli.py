"""python tools/compare.py RUN_A RUN_B [RUN_C ...] --data DIR [--resamples 1000] [--seed 0]

Is run B better than run A, or is the difference noise? Each RUN is a run folder (YOLOX's
``output_dir/<experiment>``, SSD's ``--output-dir``) or an MLflow run id; every run after the
first is compared with the first. The runs are compared on the detections of their best
evaluation (``best_detections.npy``, which both trainers write beside results.csv; for an MLflow
id, the run folder named by its ``detkit.output_dir`` tag, else the run's artifact), scored on the
val split of ``--data`` (any layout the trainers read), with a paired bootstrap over its images
(``detcore.evaluation.bootstrap``).

Printed per class and overall: AP50, AP50:95, P and R of both runs, B - A and its confidence
interval, ``*`` where the interval excludes 0. Written to ``--output-dir``: ``compare_<B>.csv``
and ``compare_<B>.png`` (per-class differences with their intervals; both runs' PR curves).
"""
import re
import tempfile
from pathlib import Path

from accel.errors import ArgParser, UserError, cli_entry
from detcore.evaluation import bootstrap
from detcore.evaluation.report import DETECTIONS_NAME, read_detections

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def make_parser():
    p = ArgParser("compare.py", description="Compare detection runs with paired-bootstrap confidence intervals.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or MLflow run ids (the first is the baseline)")
    p.add_argument("--data", required=True, help="the data set whose val split the runs were evaluated on")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--conf", type=float, default=None,
                   help="confidence at which P and R are taken (default: each run's max mean F1)")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", default="compare",
                   help="where the csv and png go (default ./compare)")
    p.add_argument("--mlflow-uri", "--mlflow_uri", dest="mlflow_uri", default=None,
                   help="tracking server for run ids (default: MLFLOW_TRACKING_URI, else MLflow's local default)")
    return p


def check_args(args):
    if len(args.runs) < 2:
        raise UserError("compare.py: give at least two runs (the first is the baseline)")
    if args.resamples < 1:
        raise UserError(f"--resamples must be >= 1 (got {args.resamples})")
    if not 0 < args.level < 1:
        raise UserError(f"--level must be in (0, 1) (got {args.level})")
    if args.conf is not None and not 0 <= args.conf <= 1:
        raise UserError(f"--conf must be in [0, 1] (got {args.conf})")


def run_detections(run, mlflow_uri=None, scratch=None):
    """(label, rows) of one RUN: a folder's ``best_detections.npy``, or an MLflow run's."""
    path = Path(run)
    if path.is_dir():
        file = path / DETECTIONS_NAME
        if not file.is_file():
            raise UserError(f"{run}: no {DETECTIONS_NAME} (written by training at each new best evaluation; "
                            "runs trained before it have none)")
        return path.name, read_detections(file, run)
    if not RUN_ID.match(str(run)):
        raise UserError(f"{run}: neither a run folder nor an MLflow run id (32 hex digits)")
    return f"{run[:8]}", read_detections(_mlflow_detections(run, mlflow_uri, scratch), run)


def _mlflow_detections(run_id, uri, scratch):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UserError(f"{run_id}: an MLflow run id needs the mlflow package (pip install mlflow)") from None
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:    # noqa: BLE001 -- unknown id, unreachable server: one line either way
        raise UserError(f"{run_id}: MLflow run not found at {client.tracking_uri} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    local = Path(run.data.tags.get("detkit.output_dir", "")) / DETECTIONS_NAME
    if local.is_file():
        return local
    try:
        return Path(client.download_artifacts(run_id, DETECTIONS_NAME, scratch))
    except Exception as exc:    # noqa: BLE001
        raise UserError(f"{run_id}: the run has no {DETECTIONS_NAME} artifact "
                        f"({str(exc).splitlines()[0][:160]})") from None


def val_ground_truth(data):
    """The pycocotools index and image ids of the val split of ``data``."""
    from detcore.data.layout import open_sources
    _, val = open_sources(data, train=False)
    return val.coco, list(val.ids)


def check_images(rows, img_ids, label, data):
    """Detections of images outside the val split mean the runs were scored on other data."""
    import numpy as np
    unknown = np.setdiff1d(np.unique(rows[:, 0]), np.asarray(img_ids, dtype=np.float64))
    if len(unknown):
        raise UserError(f"{label}: {len(unknown)} detected image id(s) (e.g. {int(unknown[0])}) are not in the "
                        f"val split of --data {data}: was the run evaluated on other data?")


def table(result, label_a, label_b):
    """The printed comparison: one line per class, the four metrics side by side."""
    lines = [f"B = {label_b} vs A = {label_a}: {result.images} images, {result.resamples} paired resamples "
             f"(seed {result.seed}), {100 * result.level:g}% intervals; * = the interval excludes 0; "
             f"P/R at confidence A {result.conf_a:.3f}, B {result.conf_b:.3f}"]
    width = max(len(c) for c in result.classes)
    head = " | ".join(f"{m:^33}" for m in bootstrap.METRICS)
    lines.append(f"{'class':<{width}} | {head}")
    for i, name in enumerate(result.classes):
        cells = []
        for m in bootstrap.METRICS:
            a, b, d = result.a[m][i], result.b[m][i], result.diff[m][i]
            lo, hi = result.low[m][i], result.high[m][i]
            mark = "*" if result.significant[m][i] else " "
            cells.append(f"{a:.3f} {b:.3f} {d:+.3f} [{lo:+.3f},{hi:+.3f}]{mark}")
        lines.append(f"{name:<{width}} | " + " | ".join(cells))
    lines.append(f"{'':<{width}}   (each: A B  B-A [interval])")
    return "\n".join(lines)


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    check_args(args)
    gt, img_ids = val_ground_truth(args.data)
    out = Path(args.output_dir)
    with tempfile.TemporaryDirectory() as scratch:
        runs = [run_detections(r, args.mlflow_uri, scratch) for r in args.runs]
    if len({label for label, _ in runs}) < len(runs):      # e.g. two runs' folders of one exp name
        runs = [(f"{i + 1}-{label}", rows) for i, (label, rows) in enumerate(runs)]
    for label, rows in runs:
        check_images(rows, img_ids, label, args.data)
    (label_a, rows_a), results = runs[0], []
    for label_b, rows_b in runs[1:]:
        result = bootstrap.compare(gt, rows_a, rows_b, img_ids, args.resamples, args.seed, args.level, args.conf)
        print(table(result, label_a, label_b), flush=True)
        stem = re.sub(r"[^\w.-]", "_", label_b)
        csv = bootstrap.write_csv(result, out / f"compare_{stem}.csv")
        png = bootstrap.plot(result, out / f"compare_{stem}.png")
        print(f"wrote {csv}" + (f" and {png}" if png else ""), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
