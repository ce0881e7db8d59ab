"""Static INT8 post-training quantisation of an exported detector (``tools/quantize.py``).

Two back ends, the same calibration input:

- ``openvino`` (the default; ``pip install 'detkit[openvino]'``, which brings NNCF): NNCF's
  post-training quantisation of the OpenVINO model with the MIXED preset (symmetric int8 weights
  per channel, asymmetric activations: SiLU's outputs are not symmetric about 0) and its bias
  correction. Writes an IR ``.xml`` + ``.bin``.
- ``onnxruntime`` (needs ``onnx`` + ``onnxruntime``): ``quantize_static`` in QDQ format
  (QuantizeLinear / DequantizeLinear pairs around each quantised op, which onnxruntime fuses into
  int8 kernels and which other runtimes, OpenVINO included, read too), int8 weights per output
  channel, uint8 activations (x86's VNNI / AMX kernels multiply u8 x s8), activation ranges from
  the calibration images (``--method``: minmax, percentile or entropy). Writes an ``.onnx``.

Why OpenVINO is the default (bench/formats.py, trained shapes weights, AP50 fp32 -> int8):
YOLOX-nano 46.8 -> 47.9 with NNCF's MIXED preset (44.0 with its symmetric default) but 7.9 with
onnxruntime's QDQ, SSD300 49.1 -> 49.3 and 48.1. onnxruntime's QDQ puts every convolution's
pre-activation output through 8 bits and has no bias correction; per-layer SQNR
(``onnxruntime.quantization.qdq_loss_debug``) was 11-20 dB on YOLOX-nano's conv outputs and the
error compounds through its depthwise-separable blocks. Quantising only the convolutions'
inputs recovered 24.7, and keeping the depthwise convolutions float 33.4, at half the speed: not
worth a default. A depthwise model quantised with onnxruntime gets a warning saying so.

Calibration images go through the runtime's own preprocessing (``Detector.preprocess``: YOLOX's
letterbox, SSD's resize + normalisation), so the int8 ranges are those of what the model sees.

What stays float: every node after the network's last convolutions (found from the graph: the
nodes from which no convolution can be reached), i.e. the heads' reshapes, sigmoids, softmax
and the box decoding, and with onnxruntime the prediction convs themselves (its QDQ quantiser
would put their outputs, the logits and box offsets, through 8 bits). Their outputs are
coordinates in pixels and probabilities; 8 bits over a 640-pixel range is a 2.5-pixel step,
enough to cost AP50:95, and these ops are a sliver of the time. An end-to-end (``--nms``)
export is refused: quantise the plain export and let the runtime run NMS, or there would be
int8 scales on the NMS inputs.
"""
import json
import tempfile
from pathlib import Path

from accel.errors import UserError

BACKENDS = ("onnxruntime", "openvino")
METHODS = ("minmax", "percentile", "entropy")
META_QUANT = "detkit_quantization"
CONV_TYPES = ("Conv", "Convolution", "GroupConvolution", "ConvTranspose")


def _need(module, extra, flag="--backend"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{flag}: {module} is not installed: pip install 'detkit[{extra}]' ({exc})") from None


def calibration_files(path, count, flag="--calib-data"):
    """The first ``count`` images (sorted) of a folder or glob; one line when there are none."""
    from detcore.deploy.media import open_source

    text = str(path)
    if not Path(text).exists() and not any(c in text for c in "*?["):
        raise UserError(f"{flag} {text} does not exist (expected a folder of training images or a glob)")
    if Path(text).is_dir():
        from detcore.data.images import IMAGE_SUFFIXES, images_under
        files = images_under(text)
        if not files:
            raise UserError(f"{flag} {text} contains no images ({', '.join(IMAGE_SUFFIXES)}): nothing to calibrate on")
    else:
        try:
            source = open_source(text, flag=flag, kind="image")
        except UserError as exc:
            raise UserError(f"{exc}: nothing to calibrate on") from None
        files = source.files
    if count < 1:
        raise UserError(f"--num-images must be >= 1 (got {count})")
    return files[:count]


def calibration_batches(detector, files):
    """Each calibration image as the network's input [1, 3, H, W] (unreadable ones skipped)."""
    import cv2

    batches = []
    for path in files:
        img = cv2.imread(str(path))
        if img is not None:
            batches.append(detector.preprocess(img)[0])
    if not batches:
        raise UserError(f"--calib-data: none of the {len(files)} image(s) could be read")
    return batches


def tail_nodes(nodes):
    """Names of the nodes from which no convolution is reachable (the head's post-processing).
    ``nodes``: [(name, op type, [input tensors], [output tensors])] in any order. One post-order
    walk (iterative: a deep graph would hit Python's recursion limit)."""
    kinds = {name: kind for name, kind, _, _ in nodes}
    consumers = {}
    for name, _, inputs, _ in nodes:
        for t in inputs:
            consumers.setdefault(t, []).append(name)
    succ = {name: [c for t in outputs for c in consumers.get(t, [])] for name, _, _, outputs in nodes}
    reaches = {}
    for start in kinds:
        stack = [(start, False)]
        while stack:
            cur, expanded = stack.pop()
            if cur in reaches:
                continue
            if expanded:     # every successor is settled: they were pushed above this entry
                reaches[cur] = any(kinds[c] in CONV_TYPES or reaches[c] for c in succ[cur])
            else:
                stack.append((cur, True))
                stack.extend((c, False) for c in succ[cur] if c not in reaches)
    return [name for name in kinds if not reaches[name] and kinds[name] not in CONV_TYPES]


def last_convs(nodes, tail):
    """The convolutions whose outputs feed the tail (the prediction convs)."""
    tail_inputs = {t for name, _, inputs, _ in nodes if name in set(tail) for t in inputs}
    return [name for name, kind, _, outputs in nodes if kind in CONV_TYPES and tail_inputs & set(outputs)]


def _onnx_float_nodes(path):
    """onnxruntime's QDQ quantiser also quantises a Conv's output when it quantises the Conv, so the
    prediction convs join the tail: their logits and box offsets leave them in float (they are 1x1
    convs with 1, 4 or C output channels: a sliver of the work)."""
    import onnx

    graph = onnx.load(str(path)).graph
    nodes = [(n.name, n.op_type, list(n.input), list(n.output)) for n in graph.node]
    tail = tail_nodes(nodes)
    return tail + last_convs(nodes, tail)


def _copy_metadata(src, dst, extra):
    import onnx

    source = onnx.load(str(src), load_external_data=False)
    model = onnx.load(str(dst))
    keys = {p.key for p in source.metadata_props} | set(extra)
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for p in source.metadata_props:
        model.metadata_props.add(key=p.key, value=p.value)
    for key, value in extra.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))


def quantize_onnxruntime(model_path, out_path, batches, method="minmax"):
    """onnxruntime's static QDQ quantisation of ``model_path`` to ``out_path`` (see the module)."""
    _need("onnx", "onnx")
    ort_q = _need("onnxruntime.quantization", "onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(ort_q.CalibrationDataReader):
        def __init__(self, name):
            self.items = iter([{name: x} for x in batches])

        def get_next(self):
            return next(self.items, None)

    import onnxruntime as ort

    input_name = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    calibrate = {"minmax": ort_q.CalibrationMethod.MinMax, "percentile": ort_q.CalibrationMethod.Percentile,
                 "entropy": ort_q.CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory() as tmp:
        import onnx
        from onnx import version_converter

        source, prepared = Path(model_path), Path(tmp) / "prepared.onnx"
        model = onnx.load(str(source))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 13:          # per-channel scales need DequantizeLinear's axis (opset 13); upstream's
            source = Path(tmp) / "opset13.onnx"        # export default is 11
            onnx.save(version_converter.convert_version(model, 13), str(source))
        # shape inference + graph optimisation first, as onnxruntime's docs ask for static quantisation
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        exclude = _onnx_float_nodes(prepared)
        ort_q.quantize_static(str(prepared), str(out_path), Reader(input_name), quant_format=ort_q.QuantFormat.QDQ,
                              per_channel=True, activation_type=ort_q.QuantType.QUInt8,
                              weight_type=ort_q.QuantType.QInt8, calibrate_method=calibrate,
                              nodes_to_exclude=exclude,
                              extra_options={"CalibTensorRangeSymmetric": False, "ActivationSymmetric": False})
    info = {"backend": "onnxruntime", "format": "QDQ", "weights": "int8 per channel", "activations": "uint8",
            "method": method, "images": len(batches), "float_tail_nodes": len(exclude)}
    _copy_metadata(model_path, out_path, {META_QUANT: json.dumps(info)})
    return info


def quantize_openvino(model_path, out_path, batches, backend_metadata):
    """NNCF's post-training quantisation of the OpenVINO model to an IR at ``out_path``."""
    ov = _need("openvino", "openvino")
    nncf = _need("nncf", "openvino")
    model = ov.Core().read_model(str(model_path))
    nodes = []
    for op in model.get_ordered_ops():
        ins = [f"{src.get_node().get_friendly_name()}:{src.get_index()}"
               for src in (i.get_source_output() for i in op.inputs())]
        outs = [f"{op.get_friendly_name()}:{k}" for k in range(op.get_output_size())]
        nodes.append((op.get_friendly_name(), op.get_type_name(), ins, outs))
    kinds = {name: kind for name, kind, _, _ in nodes}
    exclude = [n for n in tail_nodes(nodes) if kinds[n] not in ("Result", "Parameter", "Constant")]
    dataset = nncf.Dataset(batches)
    quantized = nncf.quantize(model, dataset, subset_size=len(batches), preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(names=exclude, validate=False))
    info = {"backend": "openvino", "tool": f"nncf {nncf.__version__}", "preset": "mixed",
            "weights": "int8 symmetric", "activations": "int8 asymmetric",
            "images": len(batches), "float_tail_nodes": len(exclude)}
    for key, value in {**backend_metadata, META_QUANT: json.dumps(info)}.items():
        quantized.set_rt_info(value, ["framework", key])
    out_path = Path(out_path)
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)
    return info


def depthwise_convs(path):
    """How many of the ONNX model's convolutions are depthwise (group = input channels > 1)."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {t.name: t.dims for t in graph.initializer}
    count = 0
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        count += bool(dims is not None and group > 1 and dims[1] == 1)
    return count


def quantize(model_path, out_path, calib_data, num_images=100, backend="openvino", method="minmax"):
    """Quantise the exported detector ``model_path`` (a ``.onnx``; an IR ``.xml`` too with the
    openvino back end) to ``out_path`` from ``num_images`` images of ``calib_data``; returns
    (out_path, info dict)."""
    from detcore.deploy.runtime import Detector

    if backend not in BACKENDS:
        raise UserError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    if method not in METHODS:
        raise UserError(f"--method {method}: expected one of {', '.join(METHODS)}")
    model_path, out_path = Path(model_path), Path(out_path)
    if backend == "onnxruntime" and model_path.suffix == ".xml":
        raise UserError(f"--model {model_path}: an OpenVINO IR quantises with --backend openvino")
    files = calibration_files(calib_data, num_images)
    detector = Detector(model_path, runtime="openvino" if backend == "openvino" else "onnxruntime", flag="--model")
    if detector.output == "nms":
        raise UserError(f"--model {model_path}: an end-to-end (--nms) export; quantise the export without --nms "
                        "(the runtime runs NMS on the int8 network's output)")
    if out_path.resolve() == model_path.resolve():
        raise UserError(f"--output {out_path}: would overwrite the fp32 model")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batches = calibration_batches(detector, files)
    if backend == "openvino":
        if out_path.suffix != ".xml":
            raise UserError(f"--output {out_path}: --backend openvino writes an OpenVINO IR (name it .xml)")
        info = quantize_openvino(model_path, out_path, batches, detector.backend.metadata)
    else:
        if out_path.suffix != ".onnx":
            raise UserError(f"--output {out_path}: --backend onnxruntime writes an .onnx")
        info = quantize_onnxruntime(model_path, out_path, batches, method)
        depthwise = depthwise_convs(model_path)
        if depthwise:
            from loguru import logger
            logger.warning(f"{model_path}: {depthwise} depthwise convolutions; onnxruntime's QDQ quantisation "
                           "lost 39 AP50 points on YOLOX-nano's (46.8 -> 7.9) where --backend openvino kept "
                           "them (47.9): check the int8 model's accuracy, or use --backend openvino")
    return out_path, info


def default_output(model_path, backend):
    path = Path(model_path)
    return path.with_name(f"{path.stem}_int8{'.xml' if backend == 'openvino' else '.onnx'}")

