"""``--logger mlflow`` and ``--register`` against a real MLflow tracking server (``mlflow server``
with a SQLite store and a local artifact root on a free port), read back through
``MlflowClient``: both detectors' params, metric histories and artifacts, a killed and resumed
run continuing the same MLflow run, the registered model served by ``mlflow models serve``
answering like tools/demo.py, and a server that goes away mid-run."""
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from detcore.evaluation import compare_cli
from detcore.evaluation.report import DETECTIONS_NAME
from detcore.training.checkpoints import load
from detcore.training.mlflow_run import PENDING_NAME, RUN_ID_KEY, MlflowRun, flat_params, metric_name
from yolox_tools import ROOT, SHAPES_EXP, TINY, load_tool

train = load_tool("train")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, log, what, timeout=90):
    """Poll ``url`` until it answers 200; a process that exits first fails with its log.
    (Servers log to a file: a pipe nobody reads fills up and blocks them.)"""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {Path(log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{what} did not answer {url} in {timeout} s: {Path(log).read_text()[-3000:]}")


class Server:
    """``mlflow server`` on ``port`` with a SQLite store in ``folder`` (restartable: the same
    store and port)."""

    def __init__(self, folder, port=None):
        self.folder, self.port = Path(folder), port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = self.folder / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"{self.uri}/health", self.proc, self.log, "mlflow server")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow_server")).start()
    yield srv
    srv.stop()


class Killed(Exception):
    pass


def yolox_args(data, out, *extra):
    return ["-f", SHAPES_EXP, "-b", "4", "--data_dir", str(data), *extra, *TINY, "max_epoch", "2", "steps", "2",
            "eval_interval", "1", "output_dir", str(out)]


@pytest.fixture(scope="module")
def yolox_run(server, shapes_coco, tmp_path_factory):
    """A YOLOX run of 2 epochs logged to the server and killed after its first epoch, then
    resumed to the end with ``--register``; returns (run folder, MLflow run id)."""
    from yolox.core.trainer import Trainer

    out = tmp_path_factory.mktemp("yolox_mlflow")
    flags = ["-l", "mlflow", "--mlflow-uri", server.uri, "--seed", "3"]
    real = Trainer.after_epoch

    def kill_after_first(self):
        real(self)
        if self.epoch == 0:
            raise Killed

    os.environ["MLFLOW_EXPERIMENT_NAME"] = "yolox-test"
    try:
        Trainer.after_epoch = kill_after_first
        with pytest.raises(Killed):
            train.main(yolox_args(shapes_coco, out, *flags))
        Trainer.after_epoch = real
        folder = out / "yolox_nano_shapes"
        first_id = load(folder / "latest_ckpt.pth")[RUN_ID_KEY]
        train.main(yolox_args(shapes_coco, out, *flags, "--resume", "--register", "shapes-yolox"))
    finally:
        Trainer.after_epoch = real
        os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    run_id = load(folder / "latest_ckpt.pth")[RUN_ID_KEY]
    assert run_id == first_id
    return folder, run_id


def history_steps(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def artifact_paths(client, run_id, folder=None):
    return {a.path for a in client.list_artifacts(run_id, folder)}


def test_yolox_run_is_logged_and_a_resume_continues_the_same_run(server, yolox_run):
    """Params, per-epoch metrics with the epoch as step across the kill (1 before, 2 after the
    resume: a new run would hold only epoch 2), the 12 COCO stats and per-class AP, artifacts."""
    folder, run_id = yolox_run
    client = MlflowClient(server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "yolox-test"
    assert len(client.search_runs([exp.experiment_id])) == 1        # the resume made no second run
    params = run.data.params
    assert params["num_classes"] == "4" and params["batch_size"] == "4" and params["device"] == "cpu"
    assert params["world_size"] == "1" and params["max_epoch"] == "2"
    assert "git_commit" in params and "data_dir" in params and params["precision"] == "fp32"
    for key in ("train_epoch_mean/total_loss", "train_epoch_mean/iou_loss", "val/total_loss", "val/coco/AP50_95",
                "val/coco/ARl", "val_class/circle/AP50", "val/COCOAP50"):
        assert history_steps(client, run_id, key) == [1, 2], key
    assert len(history_steps(client, run_id, "train/total_loss")) == 4     # print_interval 1, 2 x 2 steps
    coco = {k for k in run.data.metrics if k.startswith("val/coco/")}
    assert len(coco) == 12
    files = artifact_paths(client, run_id)
    assert {"results.csv", "results_per_class.csv", "confusion_matrix.csv", "results.png", "PR_curve.png",
            "confusion_matrix.png", "checkpoints"} <= files
    assert artifact_paths(client, run_id, "checkpoints") == {"checkpoints/best_ckpt.pth"}
    assert DETECTIONS_NAME in files and (folder / DETECTIONS_NAME).is_file()
    # the registered model of --register: version 1, from this run
    version = client.get_model_version("shapes-yolox", "1")
    assert version.run_id == run_id and (folder / "registered" / "model.onnx").is_file()


def test_ssd_run_is_logged_and_registered(server, shapes_coco, tmp_path):
    out = tmp_path / "ssd"
    cmd = [sys.executable, "ssd/train.py", "-d", str(shapes_coco), "-b", "2", "-e", "1", "--end-iteration", "2",
           "--val-interval", "1", "--log-interval", "1", "--num-workers", "0", "-s", "1", "--output-dir", str(out),
           "--logger", "mlflow", "--mlflow-uri", server.uri, "--register", "shapes-ssd"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_EXPERIMENT_NAME="ssd-test"))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    run_id = load(out / "ssd300_latest.pth")[RUN_ID_KEY]
    client = MlflowClient(server.uri)
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["batch_size"] == "2" and logged.data.params["end_iteration"] == "2"
    assert logged.data.params["class_names"] == "circle,rectangle,triangle,star"
    assert history_steps(client, run_id, "train/loss") == [1, 2]
    assert history_steps(client, run_id, "train_epoch_mean/loss") == [1]
    assert history_steps(client, run_id, "val/coco/AP50_95") == [1]
    assert history_steps(client, run_id, "val/loc_loss") == [1]
    assert {"results.csv", "results_per_class.csv", "PR_curve.png", "checkpoints"} <= artifact_paths(client, run_id)
    assert client.get_model_version("shapes-ssd", "1").run_id == run_id


def test_registered_model_serves_the_demo_detections_over_rest(server, yolox_run, shapes_coco, tmp_path):
    """The run's best checkpoint exported end to end (threshold 0, so the briefly trained
    model has detections), registered with tools/register_model.py and served by ``mlflow models
    serve``: an image posted over HTTP gets the detections tools/demo.py image --onnx writes."""
    folder, run_id = yolox_run
    onnx = tmp_path / "model.onnx"
    export = subprocess.run([sys.executable, "tools/export_onnx.py", "-f", SHAPES_EXP, "-c",
                             str(folder / "best_ckpt.pth"), "--nms", "--conf", "0", "--output-name", str(onnx),
                             *TINY[:4]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-2000:]
    reg = subprocess.run([sys.executable, "tools/register_model.py", "--onnx", str(onnx), "--name", "served",
                          "--run-id", run_id, "--mlflow-uri", server.uri], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert reg.returncode == 0, reg.stderr[-2000:]
    assert "version 1: mlflow models serve -m models:/served/1 --env-manager local" in reg.stdout
    image = sorted((Path(shapes_coco) / "val2017").glob("*.jpg"))[0]
    demo_dir = tmp_path / "demo"
    demo = subprocess.run([sys.executable, "tools/demo.py", "image", "--onnx", str(onnx), "--path", str(image),
                           "--save-json", "--output_dir", str(demo_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr[-2000:]
    expected = json.loads(next(demo_dir.rglob("predictions.json")).read_text())
    assert len(expected) > 0

    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/served/1",
                              "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
                             stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT,
                             start_new_session=True, env=dict(os.environ, MLFLOW_TRACKING_URI=server.uri))
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", serve, tmp_path / "serve.log", "mlflow models serve", timeout=120)
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image.read_bytes()).decode()]]}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            got = json.loads(r.read())["predictions"]
    finally:
        os.killpg(serve.pid, 9)
        serve.wait(timeout=30)
    # the demo's json rounds boxes to 3 decimals and scores to 5 (of the same float32 values)
    served = sorted((g["class_id"], round(g["score"], 5), *(round(g[k], 3) for k in "xywh")) for g in got)
    assert served == sorted((e["category_id"], e["score"], *e["bbox"]) for e in expected)
    assert {g["class_name"] for g in got} <= {"circle", "rectangle", "star", "triangle"}


def test_server_lost_mid_run_training_goes_on_and_nothing_is_lost(shapes_coco, tmp_path, capfd):
    """The server killed after the first epoch: the run ends normally with one warning line, its
    records wait in mlflow_pending.jsonl (results.csv has every epoch) and reach the same run,
    in order, once the server is back."""
    from yolox.core.trainer import Trainer

    srv = Server(tmp_path / "server").start()
    real = Trainer.after_epoch

    def stop_server_after_first(self):
        real(self)
        if self.epoch == 0:
            srv.stop()

    out = tmp_path / "run"
    try:
        Trainer.after_epoch = stop_server_after_first
        train.main(yolox_args(shapes_coco, out, "-l", "mlflow", "--mlflow-uri", srv.uri))
    finally:
        Trainer.after_epoch = real
        srv.stop()
    folder = out / "yolox_nano_shapes"
    log = (folder / "train_log.txt").read_text().splitlines()
    warnings = [line for line in log if "WARNING" in line]
    assert len(warnings) == 2, warnings     # the loss of the server, and the end that could not send
    assert f"MLflow server {srv.uri} cannot be reached" in warnings[0]
    assert f"MLflow server {srv.uri} still cannot be reached" in warnings[1]
    assert any("training done" in line for line in log)
    console = capfd.readouterr().err
    assert "Retrying" not in console and "Traceback" not in console     # no client noise, no crash
    assert len((folder / "results.csv").read_text().splitlines()) == 3        # header + 2 epochs
    pending = folder / PENDING_NAME
    assert pending.is_file() and "train_epoch_mean/total_loss" in pending.read_text()
    run_id = load(folder / "latest_ckpt.pth")[RUN_ID_KEY]

    srv.start()
    try:
        MlflowRun(folder, run_id=run_id, tracking_uri=srv.uri).close()
        client = MlflowClient(srv.uri)
        assert history_steps(client, run_id, "train_epoch_mean/total_loss") == [1, 2]
        assert history_steps(client, run_id, "val/coco/AP50_95") == [1, 2]
        assert {"results.csv", DETECTIONS_NAME} <= artifact_paths(client, run_id)
        assert client.get_run(run_id).info.status == "FINISHED"
        # tools/compare.py with a run id whose folder is gone: the detections come from the server
        kept = tmp_path / "kept"
        kept.mkdir()
        (folder / DETECTIONS_NAME).rename(kept / DETECTIONS_NAME)
        [result] = compare_cli.main([str(kept), run_id, "--data", str(shapes_coco), "--resamples", "20",
                                     "--mlflow-uri", srv.uri, "--output-dir", str(tmp_path / "cmp")])
        assert result.diff["AP50_95"][0] == 0 and (tmp_path / "cmp" / f"compare_{run_id[:8]}.csv").is_file()
    finally:
        srv.stop()
    assert not pending.exists()


def test_metric_and_param_names_fit_mlflow():
    """Class names from users' data may hold characters MLflow refuses in a metric key."""
    assert metric_name("val_class/traffic light's/AP50") == "val_class/traffic light_s/AP50"
    assert metric_name("val/coco/AP50_95") == "val/coco/AP50_95"
    params = flat_params({"a": {"b": 1, "c": [1, 2]}, "_private": 3, "long": "x" * 7000, "fn": print})
    assert params == {"a.b": "1", "a.c": "[1, 2]", "long": "x" * 6000}


def test_register_needs_the_mlflow_logger_and_a_checkpoint(tmp_path):
    """``--register`` is refused in one line before anything is built: without ``--logger
    mlflow`` (both trainers' check) and, for SSD, with ``--no-save`` (nothing to export)."""
    from argparse import Namespace

    from accel.errors import UserError
    from detcore.training.mlflow_run import check_args

    with pytest.raises(UserError, match=r"^--register m needs --logger mlflow"):
        check_args(Namespace(register="m", logger="tensorboard"))
    check_args(Namespace(register="m", logger="mlflow"))
    check_args(Namespace(register=None, logger="loguru"))
    run = subprocess.run([sys.executable, "ssd/train.py", "-d", str(tmp_path), "--logger", "mlflow", "--register", "m",
                          "--no-save"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: --register m exports the run's best checkpoint: drop --no-save"]
