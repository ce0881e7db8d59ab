"""Runs the MLPerf SSD-ResNet34 reference (mlcommons/training ``single_stage_detector/ssd`` at
4a4d5a0b, the last commit with SSD-ResNet34; see bench/get_mlperf_ssd.sh) on inputs saved by a
bench script, and prints one JSON line. Invoked as
``python bench/ssd_ref_runner.py REF_DIR encode|step INPUT.pt [THREADS]``.

Why a separate process: the reference is a directory of top-level modules (``utils``, ``train``,
``eval``, ``ssd300``, ...), some of whose names exist in bench/ or site-packages, and importing it
configures the MLPerf logger globally. Here REF_DIR comes first on ``sys.path`` and this project
is taken off it; only bench/common.py (the timing helpers, so both sides use the same statistic)
is imported afterwards, and the runner refuses to report if any other module of this project was
loaded.

``encode``: the reference's per-image ``Encoder.encode`` (utils.py) with its ``dboxes300_coco()``
(train.py) over each saved batch, image by image; the encodings are written to ``out`` so the
caller can check that both encoders agree.

``step``: the reference's training step as its train.py runs it, on CPU in fp32: ``SSD300``
(ssd300.py / base_model.py) loaded with the caller's state dict, per-image encoding of the saved
targets stacked and transposed as its loader + loop do, the image tensor requiring grad (its
``Variable(fimg, requires_grad=True)``), its ``Loss``, backward, SGD step (momentum, weight decay
on every parameter), zero_grad.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _isolate(ref_dir):
    """REF_DIR first on the path, this project nowhere on it; the MLPerf log to /dev/null
    (its mlperf_logger.py writes mlperf_compliance.log at import unless COMPLIANCE_FILE says
    otherwise, and a benchmark has nothing to log)."""
    def is_project(entry):
        return Path(entry or ".").resolve() in (ROOT, ROOT / "bench")
    sys.path[:] = [str(ref_dir)] + [p for p in sys.path if not is_project(p)]
    os.environ.setdefault("COMPLIANCE_FILE", os.devnull)


def _no_download_resnet34(pretrained=False, **kwargs):
    """Stands in for torchvision's ``resnet34`` inside base_model.py: the reference asks for
    ``resnet34(pretrained=True)`` (an ImageNet download) when given no backbone file. The
    benchmark loads the caller's whole state dict right after, so the backbone only needs the
    architecture; nothing is downloaded."""
    import torchvision
    return torchvision.models.resnet34(weights=None)


def _import_reference(ref_dir):
    """The reference modules, checked to come from REF_DIR."""
    import base_model
    import ssd300
    import train as ref_train
    import utils as ref_utils
    for mod in (base_model, ssd300, ref_train, ref_utils):
        if Path(mod.__file__).resolve().parent != Path(ref_dir).resolve():
            sys.exit(f"ssd_ref_runner: {mod.__name__} resolved to {mod.__file__}, not {ref_dir}")
    base_model.resnet34 = _no_download_resnet34
    return base_model, ssd300, ref_train, ref_utils


def _import_timing():
    """bench/common.py, imported after the reference; it puts the repo root on the path when
    imported, so the root is taken off again (nothing else of the project may load)."""
    sys.path.append(str(ROOT / "bench"))
    from common import time_best, time_median
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    return time_best, time_median


def _check_isolation():
    """Exit if any module of this project other than bench/common.py was imported (a virtualenv
    kept inside the checkout, such as .venv-oldest, is not the project)."""
    allowed = {(ROOT / "bench" / "common.py").resolve(), Path(__file__).resolve()}

    def is_project(file):
        if not os.path.isabs(file):     # torch.ops / torch.classes carry a bare '_ops.py'
            return False
        path = Path(file).resolve()
        return path.is_relative_to(ROOT) and path not in allowed and "site-packages" not in path.parts
    leaked = sorted(name for name, mod in list(sys.modules.items())
                    if getattr(mod, "__file__", None) and is_project(mod.__file__))
    if leaked:
        sys.exit(f"ssd_ref_runner: project modules were imported next to the reference: {leaked}")


def encode(ref, inp, time_best):
    """Per-image encode of every saved case; fastest of ``repeat`` timed loops over the batch."""
    import torch
    _, _, ref_train, ref_utils = ref
    encoder = ref_utils.Encoder(ref_train.dboxes300_coco())
    cases, encodings = [], []
    for case in inp["cases"]:
        pairs = [(b[lab > 0], lab[lab > 0]) for b, lab in zip(case["boxes"], case["labels"])]
        secs = time_best(lambda: [encoder.encode(b, lab) for b, lab in pairs], inp["repeat"])
        outs = [encoder.encode(b, lab) for b, lab in pairs]
        encodings.append((torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])))
        cases.append({"boxes_per_image": int(case["boxes"].shape[1]), "secs": secs})
    if inp.get("out"):
        torch.save(encodings, inp["out"])
    return {"cases": cases}


def step(ref, inp, time_best, time_median):
    """The reference's training step (see the module docstring); median of ``repeat`` steps after
    ``warmup`` steps (bench/common.py's STEP_WARMUP, as on our side). ``first_loss`` is the first
    step's loss, taken on the caller's weights."""
    import torch
    base_model, ssd300, ref_train, ref_utils = ref
    torch.manual_seed(0)
    model = ssd300.SSD300(inp["label_num"])
    model.load_state_dict(inp["state_dict"])
    model.train()
    dboxes = ref_train.dboxes300_coco()
    encoder, loss_func = ref_utils.Encoder(dboxes), base_model.Loss(dboxes)
    optim = torch.optim.SGD(model.parameters(), lr=inp["lr"], momentum=inp["momentum"],
                            weight_decay=inp["weight_decay"])
    images = inp["images"]
    pairs = [(b[lab > 0], lab[lab > 0]) for b, lab in zip(inp["boxes"], inp["labels"])]
    losses = []

    def targets():
        # the reference encodes per image in its transform; its loader's collate stacks them
        outs = [encoder.encode(b, lab) for b, lab in pairs]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])

    def run():
        bbox, label = targets()
        trans_bbox = bbox.transpose(1, 2).contiguous()
        fimg = images.detach().requires_grad_(True)
        ploc, plabel = model(fimg)
        loss = loss_func(ploc, plabel, trans_bbox, label)
        loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(loss.item())

    # repeat 0: the one step alone is timed (a smoke check, as bench/ssd_step.py --repeat 0)
    counts = dict(warmup=inp["warmup"], repeat=inp["repeat"]) if inp["repeat"] > 0 else dict(warmup=0, repeat=1)
    secs = time_median(run, **counts)
    encode_secs = time_best(targets, **counts)
    return {"secs": secs, "encode_secs": encode_secs, "first_loss": losses[0]}


def main():
    if len(sys.argv) < 4 or sys.argv[2] not in ("encode", "step"):
        sys.exit(__doc__)
    ref_dir, mode, path = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if not (ref_dir / "ssd300.py").is_file():
        sys.exit(f"ssd_ref_runner: {ref_dir} has no ssd300.py (bash bench/get_mlperf_ssd.sh)")
    _isolate(ref_dir)
    import json

    import torch
    if len(sys.argv) > 4:
        torch.set_num_threads(int(sys.argv[4]))
    ref = _import_reference(ref_dir)
    time_best, time_median = _import_timing()
    inp = torch.load(path, weights_only=False)
    result = encode(ref, inp, time_best) if mode == "encode" else step(ref, inp, time_best, time_median)
    _check_isolation()
    print(json.dumps({"mode": mode, "threads": torch.get_num_threads(), **result}), flush=True)


if __name__ == "__main__":
    main()
