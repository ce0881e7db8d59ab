"""``--logger mlflow``: one MLflow run per training run, written through ``MlflowClient`` (no
global active run, so nothing leaks into a user's own MLflow code in the same process).

- Where: ``--mlflow-uri`` or ``MLFLOW_TRACKING_URI``; without either, MLflow's embedded default
  (MLflow 3: ``sqlite:///mlflow.db`` in the working directory, artifacts under ``./mlruns``;
  nothing to start). Experiment: ``MLFLOW_EXPERIMENT_NAME`` or "detkit"; run name: the output
  folder's name.
- What: the resolved configuration as params (once, when the run is created), every scalar the
  run report logs as a metric (the epoch as step for epoch values), and at the end the run
  folder's tables, plots and best checkpoint as artifacts.
- Resume: the checkpoint keeps the run id (``RUN_ID_KEY``); a resumed training continues that
  MLflow run, its metric histories go on from the resumed step.
- A server that cannot be reached (at the start or mid-run) does not stop training: one warning
  line, then every record goes to ``mlflow_pending.jsonl`` in the run folder (beside
  results.csv, which holds the same numbers) and is sent, in order, once the server answers
  again (tried at most once a minute, and at the end, and when the run is resumed).
"""
import json
import logging
import os
import re
import time
from pathlib import Path

from loguru import logger

from accel.errors import UserError
from detcore.files import replace_atomic

RUN_ID_KEY = "mlflow_run_id"          # in both detectors' checkpoints
PENDING_NAME = "mlflow_pending.jsonl"
REGISTERED_ONNX = "registered/model.onnx"    # --register: the end-to-end export of the best checkpoint
DEFAULT_EXPERIMENT = "detkit"
RETRY_S = 60.0
MAX_PARAM_CHARS = 6000                 # MLflow's limit on a param value
# a dead server must not hold the run up: MLflow's own HTTP retries (7, exponential backoff)
# would take minutes per call. MLflow's request timeout (120 s) stays: a large checkpoint upload
# needs it. Users' own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def add_mlflow_args(parser):
    """The flags both training CLIs share for MLflow (beside their ``--logger`` choice)."""
    parser.add_argument("--mlflow-uri", "--mlflow_uri", dest="mlflow_uri", default=None,
                        help="--logger mlflow: the tracking server or store (default: MLFLOW_TRACKING_URI, "
                             "else MLflow's local default)")
    parser.add_argument("--register", default=None, metavar="NAME",
                        help="at the end, export the best checkpoint (end-to-end ONNX) and register it in "
                             "MLflow's model registry as NAME (needs --logger mlflow)")
    return parser


def check_args(args):
    """``--register`` without ``--logger mlflow`` is one line before anything is built."""
    if getattr(args, "register", None) and getattr(args, "logger", None) != "mlflow":
        raise UserError(f"--register {args.register} needs --logger mlflow (the registry is MLflow's)")


def metric_name(key):
    """``key`` with the characters MLflow rejects in a metric name (it allows letters, digits,
    ``_ - . / :`` and spaces) replaced by ``_``: class names come from users' data."""
    return re.sub(r"[^\w\-./: ]", "_", str(key))


def flat_params(config, prefix=""):
    """A nested configuration as MLflow params: ``{"a.b": "1"}``, values as text cut to MLflow's
    limit, private and callable entries left out."""
    out = {}
    for key, value in (config or {}).items():
        if str(key).startswith("_") or callable(value):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        else:
            out[metric_name(name)] = str(value)[:MAX_PARAM_CHARS]
    return out


class MlflowRun:
    """The MLflow side of a ``RunReport`` (main process only). ``run_id``: the run to continue
    (from a resumed checkpoint), else a new run is created with ``params``."""

    def __init__(self, out_dir, params=None, run_id=None, tracking_uri=None, experiment=None):
        try:
            import mlflow
            from mlflow import MlflowClient
        except ImportError:
            raise UserError("--logger mlflow needs the mlflow package (pip install mlflow, or the "
                            "project's extra: pip install -e .[mlflow])") from None
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        # the HTTP client's own line per retried request would bury the one warning of ``_went_offline``
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        self.out_dir = Path(out_dir)
        self.pending = self.out_dir / PENDING_NAME
        self.uri = tracking_uri or mlflow.get_tracking_uri()
        self.client = MlflowClient(self.uri)
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        self.offline, self.next_try = False, 0.0
        self.run_id = run_id
        if run_id is None:
            self._create(params or {})
        else:
            self._call("update_run", run_id, status="RUNNING")
            logger.info(f"MLflow: continuing run {run_id} at {self.uri}")
        self.flush()

    def _create(self, params):
        """A new run with its params; when the server cannot be reached, one warning and the
        params kept, to make the run when it answers."""
        try:
            self._create_online(params)
        except Exception as exc:    # noqa: BLE001 -- any client or transport error: go on offline
            self._went_offline(exc)
            self._keep({"create": params})

    def _create_online(self, params):
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment)
        run = self.client.create_run(exp_id, run_name=self.out_dir.name,
                                     tags={"detkit.output_dir": str(self.out_dir.resolve())})
        self.run_id = run.info.run_id
        pairs = list(flat_params(params).items())
        for start in range(0, len(pairs), 100):        # MLflow's limit of params per batch
            self._send("log_batch", [self.run_id], {"params": pairs[start:start + 100]})
        logger.info(f"MLflow: run {self.run_id} in experiment '{self.experiment}' at {self.uri}")

    # ------------------------------------------------------------------ sending, or keeping
    def _went_offline(self, exc):
        if not self.offline:
            text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            logger.warning(f"MLflow server {self.uri} cannot be reached ({text}); training goes on, "
                           f"records are kept in {self.pending} and sent when it answers")
        self.offline, self.next_try = True, time.time() + RETRY_S

    def _keep(self, record):
        self.pending.parent.mkdir(parents=True, exist_ok=True)
        with open(self.pending, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _send(self, method, args, kwargs):
        """``MlflowClient.method``; ``metrics`` rows and ``params`` pairs (JSON-able, as kept)
        become MLflow entities here."""
        from mlflow.entities import Metric, Param
        kwargs = dict(kwargs)
        if "metrics" in kwargs:
            kwargs["metrics"] = [Metric(*m) for m in kwargs["metrics"]]
        if "params" in kwargs:
            kwargs["params"] = [Param(*p) for p in kwargs["params"]]
        getattr(self.client, method)(*args, **kwargs)

    def _call(self, method, *args, **kwargs):
        """Send one call now, or keep it for later (while the server is away)."""
        if self.offline and time.time() >= self.next_try:
            self.flush()
        record = {"call": method, "args": list(args), "kwargs": kwargs}
        if self.offline or self.run_id is None:
            self._keep(record)
            return
        try:
            self._send(method, args, kwargs)
        except Exception as exc:    # noqa: BLE001 -- a report must not end a training run
            if _refused_by_server(exc):
                logger.warning(f"MLflow {method} refused: {str(exc).splitlines()[0][:200]}")
                return
            self._went_offline(exc)
            self._keep(record)

    def flush(self):
        """Send the kept records in order; True when none is left."""
        if not self.pending.exists():
            return True
        lines = self.pending.read_text().splitlines()
        self.offline = False
        for i, line in enumerate(lines):
            record = json.loads(line)
            try:
                if "create" in record:
                    if self.run_id is None:
                        self._create_online(record["create"])
                    continue
                args = [self.run_id if a is None else a for a in record["args"][:1]] + record["args"][1:]
                self._send(record["call"], args, record["kwargs"])
            except Exception as exc:    # noqa: BLE001
                if _refused_by_server(exc):
                    continue
                self.offline, self.next_try = True, time.time() + RETRY_S
                replace_atomic(self.pending, "".join(line + "\n" for line in lines[i:]).encode())
                return False
        self.pending.unlink()
        logger.info(f"MLflow: {len(lines)} kept record(s) sent to run {self.run_id}")
        return True

    # ------------------------------------------------------------------ what a report sends
    def metrics(self, step, values):
        """One ``log_batch`` (one request) for all of ``values`` at ``step``."""
        now = int(time.time() * 1000)
        rows = [[metric_name(k), float(v), now, int(step)] for k, v in values.items()]
        for start in range(0, len(rows), 1000):       # MLflow's batch limit
            self._call("log_batch", self.run_id, metrics=rows[start:start + 1000])

    def artifacts(self, paths, folder=None):
        for path in paths:
            if Path(path).is_file():
                self._call("log_artifact", self.run_id, str(path), folder)

    def close(self, status="FINISHED"):
        """End the run (``KILLED`` after a preemption: the resume continues it)."""
        self._call("set_terminated", self.run_id, status)
        if not self.flush():
            logger.warning(f"MLflow server {self.uri} still cannot be reached: {self.pending} keeps "
                           "this run's records; resuming the run sends them")


def register_export(name, export, out_dir, run_id=None, tracking_uri=None):
    """``--register NAME`` at the end of a run: ``export(path)`` writes the best checkpoint as an
    end-to-end ONNX file (``REGISTERED_ONNX`` in the run folder), which becomes version N of the
    registered model ``name`` in the run ``run_id`` (``detcore.deploy.mlflow_model.register``).
    A registry that cannot be reached is one warning naming the command that registers the kept
    file later; returns the version, or None."""
    path = Path(out_dir) / REGISTERED_ONNX
    export(path)
    try:
        from detcore.deploy.mlflow_model import register
        version = register(path, name, run_id, tracking_uri)
    except Exception as exc:    # noqa: BLE001 -- the run's results are complete without it
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        logger.warning(f"--register {name}: not registered ({text}); register {path} later with "
                       f"python tools/register_model.py --onnx {path} --name {name}"
                       + (f" --run-id {run_id}" if run_id else ""))
        return None
    logger.info(f"registered model '{name}' version {version}: "
                f"mlflow models serve -m models:/{name}/{version} --env-manager local")
    return version


def _refused_by_server(exc):
    """An answer from a reachable server that retrying will not change (e.g. a param logged
    again with another value): not a connection problem."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:
        return False
    return isinstance(exc, MlflowException) and getattr(exc, "error_code", "") in (
        "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST")
