"""An exported detector as an MLflow model: ``register`` logs an end-to-end ONNX file as a pyfunc
model of the run and registers it, so ``mlflow models serve -m models:/NAME/1 --env-manager
local`` answers REST requests with the detections ``tools/demo.py image --onnx`` finds.

The model's ``predict`` is the project's torch-free runtime (``detcore.deploy.runtime.Detector``):
its input is a table with one column ``image`` (encoded image bytes: JPEG, PNG, ...; over REST,
base64 text in ``dataframe_split``), its output one row per detection: ``image`` (the input
row), ``class_id``, ``class_name``, ``score`` and the COCO box ``x, y, w, h`` in the image's
pixels. The model carries the ``detcore`` and ``accel`` packages (``code_paths``), so it loads
wherever numpy, OpenCV and onnxruntime are installed. Imported only when MLflow is used.
"""
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

OUTPUT_COLUMNS = (("image", "long"), ("class_id", "long"), ("class_name", "string"), ("score", "double"),
                  ("x", "double"), ("y", "double"), ("w", "double"), ("h", "double"))
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("binary", "image")]),
                           outputs=Schema([ColSpec(t, n) for n, t in OUTPUT_COLUMNS]))
PACKAGES = ("detcore", "accel")


def detection_table(per_image, names):
    """The output table of a batch: ``per_image`` holds each image's ``Detector`` rows ``[N, 6]``
    (x1 y1 x2 y2 score class); one row per detection with its image's index and a COCO box. Column
    operations over the whole batch (no per-box Python loop on the serving path)."""
    dets = [np.asarray(d, dtype=np.float64).reshape(-1, 6) for d in per_image]
    d = np.concatenate(dets) if dets else np.zeros((0, 6))
    cls = d[:, 5].astype(np.int64)
    known = (cls >= 0) & (cls < len(names))
    label = np.where(known, np.asarray(list(names) + [""], dtype=object)[np.where(known, cls, len(names))],
                     cls.astype(str).astype(object))
    return pd.DataFrame({"image": np.repeat(np.arange(len(dets), dtype=np.int64), [len(x) for x in dets]),
                         "class_id": cls, "class_name": label, "score": d[:, 4], "x": d[:, 0], "y": d[:, 1],
                         "w": d[:, 2] - d[:, 0], "h": d[:, 3] - d[:, 1]})


def decode_image(data):
    """Encoded image bytes (or base64 text of them) -> a BGR array; one clear error otherwise."""
    import base64

    import cv2
    if isinstance(data, str):
        data = base64.b64decode(data)
    img = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("an 'image' value is not an encoded image (expected JPEG/PNG/... bytes)")
    return img


class DetectorModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of ``Detector`` (artifact ``model``: the ONNX file)."""

    def load_context(self, context):
        from detcore.deploy.runtime import Detector
        self.detector = Detector(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        images = [decode_image(v) for v in frame["image"]]
        return detection_table(self.detector.detect_batch(images), list(self.detector.names or []))


def register(onnx_path, name, run_id=None, tracking_uri=None):
    """Log ``onnx_path`` as the pyfunc model ``detector`` of MLflow run ``run_id`` (a new run
    when None) and register it as ``name``; returns the registered version (a number)."""
    root = Path(__file__).resolve().parents[2]
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # the signature is given and predict takes a table: MLflow's hints about type hints and
        # an input example do not apply
        warnings.filterwarnings("ignore", message=".*(type hints|input example).*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="detector", python_model=str(Path(__file__).with_name("mlflow_entry.py")),
            artifacts={"model": str(onnx_path)},
            signature=SIGNATURE, registered_model_name=name, code_paths=[str(root / p) for p in PACKAGES],
            pip_requirements=["numpy", "pandas", "onnxruntime", "opencv-python-headless"])
    return int(info.registered_model_version)
