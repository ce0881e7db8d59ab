"""What an exporter writes into an exported file for the runtime to read back, and the class names
the runtime falls back to.

The exporters (``tools/export_onnx.py``, ``ssd/export_onnx.py``, ``detcore/deploy/export_graph.py``)
record the kind of model, whether a YOLOX map is raw or decoded (both have the same shape), the
class names and an end-to-end graph's NMS settings; ``detcore.deploy.runtime.Detector`` reads them
through its backend (no ``onnx`` package needed there)."""
import importlib.util
import json
from pathlib import Path

# Metadata the exporters write into the .onnx (read back through onnxruntime, no onnx package).
META_MODEL = "detkit_model"          # "yolox" | "ssd"
META_OUTPUT = "detkit_output"        # "raw" | "decoded"
META_NAMES = "class_names"           # JSON list: YOLOX class index -> name; SSD label -> name (0 background)
META_NMS = "detkit_nms"              # JSON: conf, iou, max_det, agnostic, num_classes of an end-to-end graph
NMS_OUTPUTS = ("num_dets", "boxes", "scores", "classes")   # an end-to-end graph's outputs, in this order


def write_metadata(path, model, output, class_names=None):
    """Record what the exporter wrote in ``path``'s metadata (needs the ``onnx`` package, which
    the export has anyway): the runtime then knows a decoded YOLOX map from a raw one and the
    class names without being told."""
    import onnx

    proto = onnx.load(str(path))
    fields = {META_MODEL: model, META_OUTPUT: output}
    if class_names:
        fields[META_NAMES] = json.dumps([str(n) for n in class_names])
    kept = [p for p in proto.metadata_props if p.key not in fields]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in fields.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def coco_class_names():
    """The 80 COCO names of ``yolox/data/datasets/coco_classes.py``, loaded as a plain file: the
    ``yolox`` package's ``__init__`` imports torch, this data module does not. None when the
    file is not installed beside this package."""
    path = Path(__file__).resolve().parents[2] / "yolox" / "data" / "datasets" / "coco_classes.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_detkit_coco_classes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.COCO_CLASSES)

