"""torch.compile training for both models: same losses as eager, bare checkpoint keys, bounded
recompiles under multi-scale. Dynamo runs with the aot_eager backend here (the graph capture
and autograd are what these tests check; inductor's C++ build takes minutes on 2 cores and is
timed in bench/, not tested)."""
import pytest
import torch
import torch._dynamo

from accel import policy
from accel.checkpoint import load
from yolox.core.cli import build_exp
from yolox_tools import SHAPES_EXP, TINY, load_tool

train = load_tool("train")


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(policy, "compile_backend", lambda device: "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def make_trainer(argv):
    args = train.make_parser().parse_args(argv)
    return build_exp(args).get_trainer(args)


def test_yolox_compiled_loss_equals_eager_and_checkpoint_keys_are_bare(shapes_coco, tmp_path, aot_eager):
    common = ["-f", SHAPES_EXP, "-b", "4", "--data_dir", str(shapes_coco), "--seed", "0", *TINY,
              "output_dir", str(tmp_path)]
    compiled = make_trainer(["--use-torch-compile", *common, "steps", "1"])
    compiled.before_train()
    eager = make_trainer([*common, "steps", "1"])
    eager.before_train()
    eager.model.load_state_dict(compiled.model.state_dict())
    inps, targets = next(compiled.train_iter)[:2]
    with torch.no_grad():
        a = compiled.forward_model(inps, targets)["total_loss"]
        b = eager.model(inps, targets)["total_loss"]
    assert compiled.forward_model is not compiled.model
    torch.testing.assert_close(a, b, rtol=1e-4, atol=0)
    compiled.train_in_epoch()
    compiled.after_train()
    ckpt = load(tmp_path / "yolox_nano_shapes" / "latest_ckpt.pth")
    assert not [k for k in ckpt["model"] if "_orig_mod" in k]
    assert not [k for k in ckpt["model_raw"] if "_orig_mod" in k]


def test_multiscale_does_not_recompile_every_size(monkeypatch):
    # recompiles are dynamo's decision, whatever the backend: the plain "eager" one keeps it quick
    monkeypatch.setattr(policy, "compile_backend", lambda device: "eager")
    torch._dynamo.reset()
    from yolox.exp import get_exp
    exp = get_exp(exp_name="yolox-nano")
    exp.num_classes = 4
    model = exp.get_model().train()
    compiled = policy.compile_model(model, "cpu")
    targets = torch.zeros(1, 10, 5)
    targets[0, 0] = torch.tensor([1.0, 40.0, 40.0, 20.0, 20.0])
    torch._dynamo.utils.counters.clear()
    for size in (96, 128, 160, 96, 192):
        compiled(torch.randn(1, 3, size, size), targets)["total_loss"].backward()
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    # one graph for the first size, one with dynamic sizes after the first change; not one per size
    assert frames <= 3, dict(torch._dynamo.utils.counters["stats"])
    torch._dynamo.reset()


def test_ssd_compiled_training_keeps_bare_keys(shapes_coco, tmp_path, aot_eager):
    from ssd import train as ssd_train
    out = tmp_path / "ssd"
    ssd_train.main(["-d", str(shapes_coco), "-b", "2", "-e", "1", "--end-iteration", "1", "--val-interval", "9",
                    "--num-workers", "0", "--pretrained-backbone", "none", "--use-torch-compile",
                    "--device", "cpu", "--output-dir", str(out), "-s", "0"])
    state = load(out / "ssd300_latest.pth")
    assert state["iteration"] == 1 and not [k for k in state["model"] if "_orig_mod" in k or "module." in k]
    assert "torch.compile: first step (compile included) took" in (out / "train_log.txt").read_text()
