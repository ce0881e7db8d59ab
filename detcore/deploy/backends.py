"""Inference backends of the torch-free runtime (``detcore.deploy.runtime.Detector``): onnxruntime
and OpenVINO behind one small interface, so the detector's pre- and post-processing exist once.

A backend only loads a file and runs it; it knows nothing about detectors. It exposes:

- ``inputs`` / ``outputs``: ``[(name, shape)]`` with an int per fixed dimension and None per
  dynamic one (both runtimes' own conventions differ: onnxruntime gives strings such as
  ``"batch"``, OpenVINO ``?``);
- ``input_type``: ``"float"`` for a float32 input, else the runtime's name of the element type;
- ``metadata``: the string metadata the exporters write (ONNX ``metadata_props``; OpenVINO puts
  an ONNX file's under ``rt_info["framework"]`` and ``tools``' IR export writes it there too);
- ``run(x)``: the outputs of one float32 batch, as numpy arrays in the graph's output order.

``open_backend`` picks one: ``runtime="auto"`` takes OpenVINO for an IR ``.xml`` and onnxruntime
for an ``.onnx`` (OpenVINO when onnxruntime is not installed). Both are optional dependencies
(``pip install 'detkit[onnx]'`` / ``'detkit[openvino]'``), imported here only when chosen; a
missing one is one line saying what to install.
"""
import importlib
from pathlib import Path

import numpy as np

from accel.errors import UserError

RUNTIMES = ("auto", "onnxruntime", "openvino")
IR_SUFFIX = ".xml"


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _need(module, name, extra, path, flag):
    """Import a back end's package, or one line saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{flag} {path}: {name} is not installed: pip install 'detkit[{extra}]' ({exc})") from None


def _dim(value):
    """A fixed dimension as an int, a dynamic one (a name, '?', -1, None) as None."""
    return value if isinstance(value, int) and value > 0 else None


class OrtBackend:
    """onnxruntime's CPU execution provider; ``threads`` sets the intra-op pool (None: its default,
    one thread per core)."""

    name = "onnxruntime"

    def __init__(self, path, threads=None, flag="--onnx"):
        ort = _need("onnxruntime", "onnxruntime", "onnx", path, flag)
        self.path, self.flag = Path(path), flag
        options = ort.SessionOptions()
        options.log_severity_level = 3               # errors only: no per-node notices on stderr
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  onnxruntime raises its own classes for bad files
            raise UserError(f"{flag} {path}: onnxruntime cannot load it ({_first_line(exc)})") from None
        self.version = ort.__version__
        first = self.session.get_inputs()
        self.inputs = [(i.name, [_dim(d) for d in i.shape]) for i in first]
        self.input_type = {"tensor(float)": "float"}.get(first[0].type, first[0].type) if first else None
        self.outputs = [(o.name, [_dim(d) for d in o.shape]) for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, x):
        return self.session.run(None, {self.inputs[0][0]: x})


class OpenVinoBackend:
    """OpenVINO's CPU plugin on an ``.onnx`` or an IR ``.xml`` (its ``.bin`` beside it).

    ``precision`` is the plugin's inference precision: OpenVINO runs fp32 models in bf16 by
    default on CPUs with AMX / AVX512_BF16, which moves boxes and scores by far more than the
    1e-3 the runtimes are held to, so fp32 is asked for explicitly unless ``"bf16"`` is wanted.
    An INT8 IR (``tools/quantize.py --backend openvino``) runs its int8 parts in int8 either way.
    """

    name = "openvino"

    def __init__(self, path, threads=None, precision="f32", flag="--onnx"):
        ov = _need("openvino", "OpenVINO", "openvino", path, flag)
        self.path, self.flag = Path(path), flag
        core = ov.Core()
        if self.path.suffix == IR_SUFFIX and not self.path.with_suffix(".bin").is_file():
            raise UserError(f"{flag} {path}: its weights {self.path.with_suffix('.bin')} are missing "
                            "(an OpenVINO IR is the .xml and the .bin together)")
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # noqa: BLE001  OpenVINO raises RuntimeError with a long trace
            raise UserError(f"{flag} {path}: OpenVINO cannot read it ({_first_line(exc)})") from None
        self.version = ov.get_version()
        self.inputs = [(p.get_any_name(), self._shape(p.get_partial_shape())) for p in model.inputs]
        self.input_type = None
        if model.inputs:
            element = model.inputs[0].get_element_type()
            self.input_type = "float" if element == ov.Type.f32 else str(element.get_type_name())
        self.outputs = [(p.get_any_name() if p.get_names() else f"output{k}", self._shape(p.get_partial_shape()))
                        for k, p in enumerate(model.outputs)]
        self.metadata = self._metadata(model)
        config = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{flag} {path}: OpenVINO cannot compile it for the CPU ({_first_line(exc)})") from None
        self.request = self.compiled.create_infer_request()

    @staticmethod
    def _shape(partial):
        return [d.get_length() if d.is_static else None for d in partial] if partial.rank.is_static else []

    @staticmethod
    def _metadata(model):
        """The exporters' string metadata: ONNX ``metadata_props`` arrive under rt_info
        ``framework``; ``tools``' IR export writes them at the same place."""
        if not model.has_rt_info(["framework"]):
            return {}
        found = {}
        for key in model.get_rt_info()["framework"]:
            try:
                found[key] = model.get_rt_info(["framework", key]).astype(str)
            except Exception:  # noqa: BLE001  a non-string entry is not ours
                continue
        return found

    def run(self, x):
        result = self.request.infer({0: x})
        return [np.asarray(result[out]) for out in self.compiled.outputs]


def open_backend(path, runtime="auto", threads=None, flag="--onnx", precision="f32"):
    """The backend that runs ``path``: ``runtime`` 'onnxruntime', 'openvino' or 'auto' (OpenVINO
    for an IR ``.xml``, onnxruntime for anything else when installed, else OpenVINO)."""
    path = Path(path)
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    if not path.is_file():
        raise UserError(f"{flag} {path} does not exist")
    if runtime == "auto":
        if path.suffix == IR_SUFFIX:
            runtime = "openvino"
        else:
            try:
                import onnxruntime  # noqa: F401
                runtime = "onnxruntime"
            except ImportError:
                runtime = "openvino"
    if runtime == "onnxruntime" and path.suffix == IR_SUFFIX:
        raise UserError(f"{flag} {path}: an OpenVINO IR runs under --runtime openvino, not onnxruntime")
    if runtime == "openvino":
        return OpenVinoBackend(path, threads, precision=precision, flag=flag)
    return OrtBackend(path, threads, flag=flag)
