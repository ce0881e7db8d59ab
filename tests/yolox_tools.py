"""Helpers shared by the tests: import tools/*.py (not a package), tiny YOLOX settings, an SSDRun
builder, an ATen call recorder, the conv weights that show a memory layout, where the reference
state-dict manifests lie."""
import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
# state-dict manifests (parameter name -> shape) of the released checkpoints, kept in the repository
REFERENCE_DIR = ROOT / "tests" / "data" / "reference"
SHAPES_EXP = str(ROOT / "exps" / "example" / "shapes" / "yolox_nano_shapes.py")
# yolox-nano at 160 px, no workers, no multi-scale: a training step takes well under a second
TINY = ["input_size", "160,160", "test_size", "160,160", "data_num_workers", "0",
        "print_interval", "1", "warmup_epochs", "1", "multiscale_range", "0"]


def load_tool(name):
    """tools/<name>.py as a module (cached), so tests call its ``main(argv)`` in-process."""
    key = f"detkit_tool_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


class RecordOps(TorchDispatchMode):
    """Every ATen call made inside the ``with`` block, backward included: ``calls`` holds
    (op, args) with op named as "aten.<name>"; ``counts()`` tallies the ops."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func.overloadpacket), args))
        return func(*args, **(kwargs or {}))

    def counts(self):
        return Counter(op for op, _ in self.calls)

    def args_of(self, *ops):
        """The argument tuples of every call to one of ``ops``."""
        return [args for op, args in self.calls if op in ops]


# a loguru console line (timestamp first); anything else on stderr is the CLI's own output
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \| ")


def run_cli(main, argv, capsys):
    """(exit code, stdout, stderr lines that are not log lines, whole stderr) of ``main(argv)``;
    exit code 0 when it returns."""
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, [ln for ln in err.splitlines() if not LOG_LINE.match(ln)], err


def ssd_run(data, out, *flags):
    """ssd/train.py's SSDRun (model, loss, loaders, step) at 300 px from scratch, no workers, seed 0,
    nothing saved; ``flags`` add to or override those (``-b``, ``--device``, ...)."""
    from ssd import train as ssd_train
    from ssd.engine import SSDRun

    args = ssd_train.build_parser().parse_args(
        ["-d", str(data), "--num-workers", "0", "--pretrained-backbone", "none", "--output-dir", str(out),
         "-s", "0", "--no-save", *flags])
    ssd_train.check_args(args)
    return SSDRun(args)


def layout_bearing(model):
    """Conv weights whose NCHW and NHWC layouts differ: more than one input channel per group and
    a spatial kernel (depthwise [C, 1, k, k] and 1x1 weights count as contiguous in both)."""
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)
            and m.weight.shape[1] > 1 and m.weight.shape[2] * m.weight.shape[3] > 1]


def calibrate(model, batch):
    """Random weights whose batch-norm statistics are those of ``batch``. A freshly initialised
    network's activations shrink layer after layer (YOLOX-nano: std ~1e-8 at stride 32), so every
    anchor would score the same whatever the image; after one pass that sets the statistics from
    real images the scores spread and differ between images, as a trained model's do."""
    model.eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = 1.0
        bn.train()
    with torch.no_grad():
        model(batch)
    return model.eval()


def detecting_nano(image_paths, size):
    """(exp, eval model): the seeded 4-class shapes YOLOX-nano at ``size`` x ``size`` that draws
    boxes without training: class and objectness biases at 0 instead of the focal prior (scores
    ~1e-4 -> around 0.25) and batch-norm statistics calibrated on ``image_paths`` (scores then
    spread ~0.02-0.9 with the image), for demo and runtime tests that need detections."""
    import cv2

    from yolox.data import ValTransform
    from yolox.exp import get_exp

    torch.manual_seed(0)
    exp = get_exp(SHAPES_EXP)
    exp.test_size = (size, size)
    model = exp.get_model()
    with torch.no_grad():
        for conv in (*model.head.obj_preds, *model.head.cls_preds):
            conv.bias.zero_()
    batch = torch.stack([torch.from_numpy(ValTransform()(cv2.imread(str(p)), None, exp.test_size)[0])
                         for p in image_paths])
    return exp, calibrate(model, batch)


def detecting_ssd_checkpoint(image_paths, folder):
    """Path of ``folder/iter_0.pt``: a seeded 5-label SSD300 (shapes labels) whose batch-norm
    statistics are calibrated on ``image_paths`` and whose heads are scaled by 0.1 (calibrated,
    they saturate: many scores exactly 1.0, boxes e^8 wide), so it detects without training."""
    from PIL import Image

    from ssd import SSD300
    from ssd.data import to_normalised_tensor

    torch.manual_seed(0)
    net = SSD300(label_num=5)
    batch = []
    for path in image_paths:
        with Image.open(path) as img:
            batch.append(to_normalised_tensor(img.convert("RGB")))
    calibrate(net, torch.stack(batch))
    with torch.no_grad():
        for conv in (*net.conf, *net.loc):
            conv.weight.mul_(0.1)
    ckpt = Path(folder) / "iter_0.pt"
    torch.save({"model": net.state_dict(),
                "label_map": {0: "background", 1: "circle", 2: "rectangle", 3: "triangle", 4: "star"}}, ckpt)
    return ckpt
