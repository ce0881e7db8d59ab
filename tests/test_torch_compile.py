"""torch.compile training for both models: same losses as eager, bare checkpoint keys, bounded
recompiles under multi-scale. Dynamo runs with the aot_eager backend here (the graph capture
and autograd are what these tests check; inductor's C++ build of a whole model takes minutes on
2 cores and is timed in bench/). One small block goes through inductor with the CPU options."""
import pytest
import torch
import torch._dynamo

from accel import policy
from detcore.training.checkpoints import load
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
    inps, targets = compiled.next_batch()
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


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_spp_pools_reach_the_compiler_as_aten_kernels(fmt):
    """Under torch.compile the SPP pools are the opaque detkit op in the forward and backward graphs
    (no max_pool left for inductor to lower into window loops); the block's output equals eager's
    bit for bit and its gradients to float rounding (AOT decomposes the BN backward)."""
    from torch._dynamo.backends.common import aot_autograd
    from functorch.compile import make_boxed_func
    from yolox.models.network_blocks import SPPBottleneck
    graphs = []

    def record(gm, _example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    block = SPPBottleneck(16, 16).train().to(memory_format=fmt)
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=fmt)
    x_eager, x_comp = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(2, 16, 9, 9)
    eager = block(x_eager)
    eager.backward(grad)
    torch._dynamo.reset()
    out = torch.compile(block, backend=aot_autograd(fw_compiler=record, bw_compiler=record))(x_comp)
    out.backward(grad)
    torch._dynamo.reset()
    forward, backward = graphs
    assert "detkit.same_max_pool.default" in forward
    assert "detkit.same_max_pool_backward.default" in backward
    assert not [op for op in forward | backward if "max_pool2d" in op], forward | backward
    assert out.stride() == eager.stride() and torch.equal(out, eager)
    torch.testing.assert_close(x_comp.grad, x_eager.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_spp_pool_op_routes_gradients_as_aten_does(fmt):
    """The op's forward and backward are ATen's pools: on an input full of ties (values 0..2), where
    a wrong padding, window or argmax rule would move gradient, compiled == eager bit for bit."""
    from yolox.models.spp_pool import spp_pools
    pools = torch.nn.ModuleList(torch.nn.MaxPool2d(k, stride=1, padding=k // 2) for k in (5, 9, 13))
    x = torch.randint(0, 3, (2, 4, 15, 15)).float().contiguous(memory_format=fmt)
    grad = torch.randn(2, 16, 15, 15)

    def pyramid(t):
        return torch.cat([t] + spp_pools(t, pools), dim=1)

    x_eager, x_comp = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager = pyramid(x_eager)
    eager.backward(grad)
    torch._dynamo.reset()
    out = torch.compile(pyramid, backend="aot_eager")(x_comp)
    out.backward(grad)
    torch._dynamo.reset()
    assert torch.equal(out, eager) and torch.equal(x_comp.grad, x_eager.grad)
    assert x_comp.grad.stride() == x_eager.grad.stride()


def test_compile_model_gives_inductor_the_cpu_options_and_other_backends_none(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: calls.append(kwargs) or model)
    policy.compile_model(torch.nn.Linear(2, 2), "cpu")
    monkeypatch.setattr(policy, "compile_backend", lambda device: "aot_eager")
    policy.compile_model(torch.nn.Linear(2, 2), "cpu")
    assert calls == [{"backend": "inductor", "options": policy.inductor_options("cpu")},
                     {"backend": "aot_eager"}]
    assert policy.inductor_options("cpu") and policy.inductor_options("cuda") is None


def test_cpu_inductor_options_are_all_known_to_current_torch():
    """A misspelt key would be dropped as "unknown to this torch": on the torch CI installs every
    one of them must be there (torch 2.0.1, the oldest supported, knows only the first)."""
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 10):
        assert set(policy.inductor_options("cpu")) <= set(policy.CPU_INDUCTOR_OPTIONS)
    else:
        assert policy.inductor_options("cpu") == policy.CPU_INDUCTOR_OPTIONS


def test_inductor_with_the_cpu_options_trains_a_conv_bn_silu_block_as_eager():
    """The real inductor build (one small block, seconds): torch accepts the options, and the
    forward and input/weight gradients (two-pass BN variance, recomputed sigmoid) equal eager's."""
    from yolox.models.network_blocks import BaseConv
    torch.manual_seed(0)
    block = BaseConv(4, 8, 3, 1).train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 12, 12).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 8, 12, 12)
    results = []
    for forward in (block, policy.compile_model(block, "cpu")):
        block.zero_grad()
        xi = x.clone().requires_grad_()
        out = forward(xi)
        out.backward(grad)
        results.append((out.detach(), xi.grad, block.conv.weight.grad.clone()))
    torch._dynamo.reset()
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
