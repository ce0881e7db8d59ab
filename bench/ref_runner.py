"""Runs the *released* YOLOX (pip ``yolox==0.3.0`` in a separate virtualenv) on inputs saved by a
bench script, and prints one JSON line. Invoked as
``REF_PYTHON bench/ref_runner.py step INPUT.pt [THREADS]`` or ``REF_PYTHON bench/ref_runner.py data JSON``.

``yolox`` here must resolve to the reference: bench/ is put on the path only after it is imported.
"""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "bench")]

import yolox  # noqa: E402
from yolox.exp import get_exp  # noqa: E402

if Path(yolox.__file__).resolve().is_relative_to(ROOT):
    sys.exit(f"ref_runner: 'yolox' resolved to this project ({yolox.__file__}), not the reference")

sys.path.append(str(ROOT / "bench"))  # only now: ``yolox`` above must stay the reference
from common import STEP_WARMUP, time_median  # noqa: E402


def step(inp):
    """Full training step of the reference model: forward + loss + backward + SGD step."""
    torch.manual_seed(0)
    model = get_exp(None, inp["name"]).get_model()
    model.load_state_dict(inp["state_dict"])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    losses = []

    def run():
        out = model(inp["images"], inp["targets"])
        opt.zero_grad(set_to_none=True)
        out["total_loss"].backward()
        opt.step()
        losses.append(float(out["total_loss"]))

    secs = time_median(run, repeat=inp["repeat"], warmup=STEP_WARMUP)
    return {"secs": secs, "first_loss": losses[0], "source": str(Path(yolox.__file__).parent)}


def data(cfg):
    """The reference's training data pipeline, built by bench/yolox_data.py's own builder."""
    import yolox.data as ref_data
    from yolox_data import images_per_s
    return {"img_s": images_per_s(ref_data, cfg["data_dir"], cfg["size"], cfg["batch"], cfg["batches"],
                                  cfg["workers"])}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "data":
        result = data(json.loads(sys.argv[2]))
    else:
        torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else torch.get_num_threads())
        result = step(torch.load(sys.argv[2], weights_only=False))
    print(json.dumps({"mode": mode, **result}), flush=True)
