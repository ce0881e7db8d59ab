"""HPU behaviour through a recording fake of ``habana_frameworks`` (tests only, never shipped).

The fake is served by an import hook, so a test sees *when* each Habana module gets imported
and what the environment looked like at that moment (the bridge reads its variables at import).
"""
import argparse
import contextlib
import importlib.abc
import importlib.util
import os
import sys
import types
from datetime import timedelta

import pytest
import torch

import accel
from accel import distributed, hpu, precision
from accel.errors import UserError

ENV_AT_IMPORT = ("PT_HPU_LAZY_MODE", "PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST",
                 "PT_HPU_AUTOCAST_FP32_OPS_LIST", "PT_HPU_ENABLE_REFINE_DYNAMIC_SHAPES")
FAKE_MODULES = {
    "habana_frameworks", "habana_frameworks.torch", "habana_frameworks.torch.core",
    "habana_frameworks.torch.hpu", "habana_frameworks.torch.hpex",
    "habana_frameworks.torch.hpex.hmp", "habana_frameworks.torch.distributed",
    "habana_frameworks.torch.distributed.hccl", "habana_frameworks.torch.hpex.optimizers",
    "habana_frameworks.torch.hpex.movingavrg",
}


class FakeFusedSGD(torch.optim.SGD):
    """Stands in for hpex.optimizers.FusedSGD (documented as torch.optim.SGD's signature)."""


class FakeFusedEMA:
    """Stands in for hpex.movingavrg.FusedEMA(model, decay): ``update``, ``ema``, ``updates``."""

    def __init__(self, model, decay):
        import copy
        self.ema, self.decay, self.updates = copy.deepcopy(model), decay, 0

    def update(self, model):
        self.updates += 1


class FakeHabana(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Records imports (with the env at import time) and calls into one ordered event list."""

    def __init__(self, available=True):
        self.available = available
        self.imports = {}   # module name -> {env var: value at import}
        self.events = []    # ordered calls: "mark_step", "hmp.convert", "disable_casts:enter", ...
        self.convert_kwargs = None

    def find_spec(self, name, path=None, target=None):
        if name in FAKE_MODULES:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        self.imports[name] = {k: os.environ.get(k) for k in ENV_AT_IMPORT}
        if name.endswith(".core"):
            module.mark_step = lambda: self.events.append("mark_step")
        elif name.endswith(".hpu"):
            module.is_available = lambda: self.available
            module.synchronize = lambda: self.events.append("synchronize")
            module.enable_dynamic_shape = lambda: self.events.append("enable_dynamic_shape")
        elif name.endswith(".optimizers"):
            module.FusedSGD = FakeFusedSGD
        elif name.endswith(".movingavrg"):
            module.FusedEMA = FakeFusedEMA
        elif name.endswith(".hmp"):
            module.convert = self._convert
            module.disable_casts = self._disable_casts

    def _convert(self, **kwargs):
        self.events.append("hmp.convert")
        self.convert_kwargs = kwargs

    @contextlib.contextmanager
    def _disable_casts(self):
        self.events.append("disable_casts:enter")
        yield
        self.events.append("disable_casts:exit")


def _drop_habana_modules():
    for name in [m for m in sys.modules if m.split(".")[0] == "habana_frameworks"]:
        del sys.modules[name]


@pytest.fixture
def clean_env():
    saved = dict(os.environ)
    for var in ENV_AT_IMPORT + ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                                "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        os.environ.pop(var, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def fake(monkeypatch, clean_env):
    _drop_habana_modules()
    finder = FakeHabana()
    monkeypatch.setattr(sys, "meta_path", [finder] + sys.meta_path)
    yield finder
    _drop_habana_modules()
    precision._HMP_CONVERTED.clear()   # HMP is process state; the fake's conversion ends here


def parse(argv):
    parser = argparse.ArgumentParser()
    accel.add_device_args(parser)
    accel.add_precision_args(parser)
    return parser.parse_args(argv)


class RecordingSGD(torch.optim.SGD):
    def __init__(self, params, events):
        super().__init__(params, lr=0.1)
        self.events = events

    def step(self, closure=None):
        self.events.append("step")
        return super().step(closure)


def run_step(prec, events):
    """One backward_and_step on a CPU parameter; the device label alone drives the HPU calls."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = RecordingSGD([w], events)
    loss = (w * torch.tensor([3.0, 4.0])).sum()
    loss.register_hook(lambda grad: events.append("backward"))
    prec.backward_and_step(loss, opt)
    return w


@pytest.mark.parametrize("argv", [["--hpu"], ["--use_hpu"], ["--use-hpu"], ["--device", "hpu"]])
def test_hpu_aliases_import_the_bridge_lazily(fake, argv):
    args = parse(argv)
    assert not fake.imports, "parsing flags must not import habana_frameworks"
    assert accel.resolve_device(args) == torch.device("hpu")
    assert "habana_frameworks.torch.core" in fake.imports
    assert fake.imports["habana_frameworks.torch.core"]["PT_HPU_LAZY_MODE"] == "1"  # default lazy


def test_cpu_path_never_imports_habana(fake):
    device = accel.resolve_device(parse(["--device", "cpu", "--autocast"]))
    prec = accel.Precision.from_args(parse(["--device", "cpu", "--autocast"]), device)
    run_step(prec, fake.events)
    accel.mark_step(device)
    accel.synchronize(device)
    assert fake.imports == {}
    assert fake.events == ["backward", "step"]  # no mark_step / synchronize off HPU


def test_missing_stack_is_one_line_error(monkeypatch, clean_env):
    _drop_habana_modules()
    monkeypatch.setitem(sys.modules, "habana_frameworks", None)  # import now raises ImportError
    with pytest.raises(UserError) as err:
        accel.resolve_device(parse(["--hpu"]))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("--device hpu requested but the Habana stack (habana_frameworks) is "
                          "not installed")
    assert "Habana's installer" in msg


def test_hpu_not_visible_is_an_error(fake):
    fake.available = False
    with pytest.raises(UserError, match="is_available\\(\\) is False"):
        accel.resolve_device(parse(["--hpu"]))


def test_backward_and_step_marks_steps_in_lazy_mode(fake):
    device = accel.resolve_device(parse(["--hpu"]))
    w = run_step(accel.Precision(device), fake.events)
    assert fake.events == ["backward", "mark_step", "step", "mark_step"]
    # SGD lr 0.1 on loss = 3*w0 + 4*w1: w - 0.1 * [3, 4]
    assert torch.allclose(w.detach(), torch.tensor([0.7, 1.6]))
    accel.synchronize(device)
    assert fake.events[-1] == "synchronize"


def test_eager_mode_skips_mark_step(fake):
    os.environ["PT_HPU_LAZY_MODE"] = "0"
    device = accel.resolve_device(parse(["--hpu"]))
    assert not accel.lazy_mode()
    run_step(accel.Precision(device), fake.events)
    assert fake.events == ["backward", "step"]


def test_lazy_mode_flag_agrees_with_env(fake):
    os.environ["PT_HPU_LAZY_MODE"] = "1"
    accel.resolve_device(parse(["--hpu", "--hpu-lazy-mode"]))
    assert fake.imports["habana_frameworks.torch.core"]["PT_HPU_LAZY_MODE"] == "1"
    assert accel.lazy_mode()


def test_eager_env_is_passed_through_to_the_bridge(fake):
    os.environ["PT_HPU_LAZY_MODE"] = "0"
    accel.resolve_device(parse(["--hpu"]))
    assert fake.imports["habana_frameworks.torch.core"]["PT_HPU_LAZY_MODE"] == "0"


def test_lazy_mode_flag_conflicts(fake):
    os.environ["PT_HPU_LAZY_MODE"] = "0"
    with pytest.raises(UserError, match="--hpu-lazy-mode conflicts with PT_HPU_LAZY_MODE=0"):
        accel.resolve_device(parse(["--hpu", "--hpu-lazy-mode"]))
    with pytest.raises(UserError, match="--hpu-lazy-mode needs --device hpu"):
        accel.resolve_device(parse(["--hpu-lazy-mode"]))
    assert fake.imports == {}


def test_hmp_converts_with_op_lists_and_disables_casts_for_step(fake, tmp_path):
    bf16, fp32 = tmp_path / "bf16.txt", tmp_path / "fp32.txt"
    bf16.write_text("conv2d\n")
    fp32.write_text("softmax\n")
    args = parse(["--hpu", "--hmp", "--hmp-opt-level", "O1", "--hmp-bf16", str(bf16),
                  "--hmp-fp32", str(fp32), "--hmp-verbose"])
    prec = accel.Precision.from_args(args, accel.resolve_device(args))
    assert fake.convert_kwargs == {"opt_level": "O1", "bf16_file_path": str(bf16),
                                   "fp32_file_path": str(fp32), "isVerbose": True}
    assert isinstance(prec.autocast(), contextlib.nullcontext)  # HMP casts globally
    run_step(prec, fake.events)
    assert fake.events == ["hmp.convert", "backward", "mark_step", "disable_casts:enter", "step",
                           "disable_casts:exit", "mark_step"]


def test_hmp_defaults_to_repo_op_lists(fake):
    args = parse(["--hpu", "--hmp"])
    accel.Precision.from_args(args, accel.resolve_device(args))
    assert fake.convert_kwargs["bf16_file_path"] == str(precision.DEFAULT_BF16_OPS)
    assert fake.convert_kwargs["fp32_file_path"] == str(precision.DEFAULT_FP32_OPS)
    assert fake.convert_kwargs["opt_level"] == "O1" and fake.convert_kwargs["isVerbose"] is False
    assert precision.DEFAULT_BF16_OPS.read_text().split() == [
        "max_pool2d_with_indices", "max_pool2d", "conv2d", "bmm", "mul", "mm", "mv", "div",
        "batch_norm", "sigmoid"]
    assert precision.DEFAULT_FP32_OPS.read_text().split() == [
        "log_softmax", "nll_loss", "softmax", "binary_cross_entropy", "l1_loss", "view"]


def test_hpu_autocast_exports_op_lists_before_import(fake):
    args = parse(["--hpu", "--autocast"])
    device = accel.resolve_device(args)
    seen = fake.imports["habana_frameworks.torch.core"]
    assert seen["PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST"] == str(precision.DEFAULT_BF16_OPS)
    assert seen["PT_HPU_AUTOCAST_FP32_OPS_LIST"] == str(precision.DEFAULT_FP32_OPS)
    prec = accel.Precision.from_args(args, device)
    assert prec.mode == "bf16" and prec.hmp is None
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 1):
        pytest.skip("this torch (< 2.1) builds hpu autocast only with Habana's real bridge loaded")
    with prec.autocast():
        assert torch.is_autocast_enabled("hpu")
        assert torch.get_autocast_dtype("hpu") == torch.bfloat16
    assert "hmp.convert" not in fake.events


def test_hpu_autocast_env_precedence(fake, tmp_path):
    """Explicit flag > variable already exported by the user > repo default."""
    mine = tmp_path / "mine.txt"
    mine.write_text("mm\n")
    os.environ["PT_HPU_AUTOCAST_FP32_OPS_LIST"] = "/user/exported/fp32.txt"
    accel.resolve_device(parse(["--hpu", "--autocast", "--hmp-bf16", str(mine)]))
    seen = fake.imports["habana_frameworks.torch.core"]
    assert seen["PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST"] == str(mine.resolve())
    assert seen["PT_HPU_AUTOCAST_FP32_OPS_LIST"] == "/user/exported/fp32.txt"


@pytest.mark.parametrize("flag", ["--hmp-bf16", "--hmp-fp32"])
@pytest.mark.parametrize("mode", ["--hmp", "--autocast"])
def test_missing_op_list_names_flag_and_file(fake, tmp_path, flag, mode):
    missing = tmp_path / "nope.txt"
    with pytest.raises(UserError) as err:
        args = parse(["--hpu", mode, flag, str(missing)])
        accel.Precision.from_args(args, accel.resolve_device(args))
    assert str(err.value).startswith(f"{flag} {missing} does not exist")
    assert "habana_frameworks.torch.core" not in fake.imports


def test_hccl_backend_registered_before_init(fake, monkeypatch):
    calls = []

    def record_init(**kwargs):
        calls.append((kwargs, "habana_frameworks.torch.distributed.hccl" in fake.imports))

    monkeypatch.setattr(distributed.dist, "init_process_group", record_init)
    monkeypatch.setattr(distributed, "_attempt_store", lambda info, timeout: ("store", info.rank, timeout))
    monkeypatch.setattr(distributed, "wait_for_rendezvous", lambda *args: None)    # no rank 0 here
    watched = []
    monkeypatch.setattr(distributed.watchdog, "start", lambda found, after, attempt: watched.append(after))
    os.environ.update(OMPI_COMM_WORLD_RANK="1", OMPI_COMM_WORLD_LOCAL_RANK="1",
                      OMPI_COMM_WORLD_SIZE="2")
    device = accel.resolve_device(parse(["--hpu"]))
    assert accel.backend_for(device) == "hccl"
    info = accel.init_distributed(device, timeout_s=42)
    assert info == accel.DistInfo(rank=1, local_rank=1, world_size=2)
    (kwargs, hccl_imported), = calls
    assert hccl_imported
    # the hang watchdog acts after --dist-timeout; the group's own timeout is its backstop
    backstop = timedelta(seconds=42 + distributed.watchdog.GRACE_S)
    assert watched == [42]
    assert kwargs == {"backend": "hccl", "store": ("store", 1, backstop), "rank": 1,
                      "world_size": 2, "timeout": backstop}
    # single-node mpirun: the rendezvous defaults and torchrun-style variables are filled in
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("127.0.0.1", "29500")
    assert [os.environ[v] for v in ("RANK", "LOCAL_RANK", "WORLD_SIZE")] == ["1", "1", "2"]


def test_fake_is_not_part_of_the_package():
    import accel as pkg
    from pathlib import Path
    shipped = "".join(p.read_text() for p in Path(pkg.__file__).parent.glob("*.py"))
    assert "FakeHabana" not in shipped and "meta_path" not in shipped


def test_autocast_env_set_after_import_warns(fake):
    from loguru import logger
    device = accel.resolve_device(parse(["--hpu"]))  # bridge imported without autocast lists
    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        accel.Precision.from_args(parse(["--hpu", "--autocast"]), device)
    finally:
        logger.remove(sink)
    assert len(lines) == 2 and all("only takes effect in a new process" in ln for ln in lines)


def test_device_auto_prefers_a_visible_gaudi(fake):
    assert accel.resolve_device(parse([])) == torch.device("hpu")          # auto is the default
    assert accel.resolve_device(parse(["--device", "auto"])) == torch.device("hpu")


def test_device_auto_falls_back_when_no_gaudi_is_visible(fake, monkeypatch):
    fake.available = False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert accel.resolve_device(parse([])) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    assert accel.resolve_device(parse([])) == torch.device("cuda", 0)


def test_device_auto_without_the_stack_never_imports_it(monkeypatch, clean_env):
    _drop_habana_modules()
    monkeypatch.setitem(sys.modules, "habana_frameworks", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert accel.resolve_device(parse([])) == torch.device("cpu")


# ---------------------------------------------------------------- device policies (accel.policy)
def test_policies_on_each_device(fake):
    from accel import policy
    assert policy.pin_memory_kwargs("cpu") == {}
    assert policy.pin_memory_kwargs("cuda") == {"pin_memory": True}
    assert policy.pin_memory_kwargs("hpu") == {"pin_memory": True, "pin_memory_device": "hpu"}
    assert [policy.use_channels_last(d) for d in ("cpu", "cuda", "hpu")] == [True, True, False]
    assert policy.memory_format("hpu") == torch.contiguous_format
    assert policy.memory_format("cpu", wanted=False) == torch.contiguous_format
    assert policy.loss_device("hpu") == torch.device("cpu") and policy.script_loss("hpu")
    assert policy.loss_device("cpu") == torch.device("cpu") and not policy.script_loss("cpu")
    assert policy.compile_backend("cpu") == "inductor"
    assert fake.imports == {}             # none of these import the Habana stack


def test_chunk_items_is_never_zero():
    from accel.policy import chunk_items

    for work in (1, 4_194_303, 4_194_305, 500 * 8732, 10 ** 9):
        assert chunk_items("cpu", 8, work, 1 << 22) >= 1
    assert chunk_items("cpu", 8, 0, 1 << 22) >= 1


def test_compile_on_hpu_needs_eager_mode(fake):
    from accel import policy
    os.environ["PT_HPU_LAZY_MODE"] = "1"
    with pytest.raises(UserError, match="needs eager mode: set PT_HPU_LAZY_MODE=0"):
        policy.compile_backend("hpu")
    os.environ["PT_HPU_LAZY_MODE"] = "0"
    assert policy.compile_backend("hpu") == "hpu_backend"


def test_habana_loader_used_only_on_hpu_when_importable(fake, monkeypatch):
    from torch.utils.data import DataLoader

    from accel import policy

    class HabanaDataLoader:
        pass

    fake_module = type(sys)("habana_dataloader")
    fake_module.HabanaDataLoader = HabanaDataLoader
    monkeypatch.setitem(sys.modules, "habana_dataloader", fake_module)
    assert policy.loader_class("HABANA", "hpu") is HabanaDataLoader
    assert policy.loader_class("HABANA", "cpu") is DataLoader
    assert policy.loader_class("MP", "hpu") is DataLoader
    monkeypatch.setitem(sys.modules, "habana_dataloader", None)      # not importable
    assert policy.loader_class("HABANA", "hpu") is DataLoader
    assert policy.default_worker_type() == "HABANA"                  # the stack (fake) is there


def test_fp32_region_disables_hmp_casts_once_converted(fake):
    device = accel.resolve_device(parse(["--hpu"]))
    with accel.fp32_region("cpu"):
        pass
    assert "disable_casts:enter" not in fake.events                  # no HMP yet
    accel.Precision(device, "bf16", hmp=True, bf16_ops="a", fp32_ops="b")
    with accel.fp32_region("cpu"):
        try:
            assert not torch.is_autocast_enabled("cpu")
        except TypeError:                           # torch < 2.4 takes no device argument
            assert not torch.is_autocast_cpu_enabled()
    assert fake.events[-2:] == ["disable_casts:enter", "disable_casts:exit"]


def test_yolox_loss_on_hpu_runs_on_the_host_without_hmp_casts(fake, monkeypatch):
    """The head's loss call: inputs moved to the policy's loss device, HMP casts off."""
    from yolox.models import yolo_head
    device = accel.resolve_device(parse(["--hpu"]))
    accel.Precision(device, "bf16", hmp=True, bf16_ops="a", fp32_ops="b")
    seen = {}

    def fake_loss(*args):
        seen["devices"] = {a.device.type for a in args[:5]}
        seen["events"] = list(fake.events)
        return tuple(torch.zeros(()) for _ in range(6))

    monkeypatch.setattr(yolo_head, "get_loss_fn", lambda scripted: fake_loss)
    monkeypatch.setattr(yolo_head, "loss_device", lambda d: torch.device("cpu"))
    head = yolo_head.YOLOXHead(2, width=0.25)
    out = head.losses(*(torch.zeros(1, 3, 7) for _ in range(2)), torch.zeros(3, 2), torch.ones(3),
                      torch.zeros(1, 5, 5))
    assert set(out) == {"total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss", "num_fg"}
    assert seen["devices"] == {"cpu"} and seen["events"][-1] == "disable_casts:enter"



# ---------------------------------------------------------------- Habana's fast paths (issue: HPU parity)
def test_fused_sgd_and_ema_exactly_on_hpu(fake):
    from accel import policy
    from yolox.core.ema import ModelEMA
    from yolox.exp import get_exp
    assert policy.sgd_class("cpu") is torch.optim.SGD and policy.ema_class("cpu", ModelEMA) is ModelEMA
    assert fake.imports == {}
    assert policy.sgd_class("hpu") is FakeFusedSGD and policy.ema_class("hpu", ModelEMA) is FakeFusedEMA
    exp = get_exp(exp_name="yolox-nano")
    exp.model, exp.device = exp.get_model(), torch.device("hpu")
    fused = exp.get_optimizer(8)
    assert type(fused) is FakeFusedSGD and len(fused.param_groups) == 3
    assert fused.defaults["nesterov"] and fused.param_groups[1]["weight_decay"] == exp.weight_decay
    exp.device = torch.device("cpu")
    plain = exp.get_optimizer(8)
    assert type(plain) is torch.optim.SGD
    for p in exp.model.parameters():
        p.grad = torch.ones_like(p)
    fused.step()
    plain.load_state_dict(fused.state_dict())          # a fused checkpoint resumes off HPU
    assert len(plain.state_dict()["state"]) == len(fused.state_dict()["state"])


def test_ssd_engine_uses_the_fused_optimizer_class_on_hpu(fake):
    from accel import policy
    from ssd import SSD300
    opt = policy.sgd_class("hpu")(SSD300(label_num=3).parameters(), lr=0.1, momentum=0.9,
                                  weight_decay=5e-4)
    assert type(opt) is FakeFusedSGD and len(opt.param_groups) == 1   # decay on all, as MLPerf


@pytest.mark.parametrize("dynamic,env,calls", [(True, "1", 1), (False, "0", 0), (None, None, 0)])
def test_dynamic_shapes_switch(fake, dynamic, env, calls):
    accel.resolve_device(parse(["--hpu"]), dynamic_shapes=dynamic)
    assert fake.imports["habana_frameworks.torch.core"]["PT_HPU_ENABLE_REFINE_DYNAMIC_SHAPES"] == env
    assert fake.events.count("enable_dynamic_shape") == calls


def test_postprocessing_on_the_host_on_hpu():
    from accel import policy
    assert policy.postprocess_device("hpu") == torch.device("cpu")
    assert policy.postprocess_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device,first", [("hpu", 100 * 2**20), ("cpu", None)])
def test_ddp_settings_and_first_bucket(monkeypatch, device, first):
    seen = {}

    class RecordingDDP(torch.nn.Module):
        def __init__(self, module, **kwargs):
            super().__init__()
            seen.update(kwargs)

    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", RecordingDDP)
    monkeypatch.setattr(distributed.dist, "_DEFAULT_FIRST_BUCKET_BYTES", None, raising=False)
    distributed.wrap_ddp(torch.nn.Linear(2, 2), device, hpu_first_bucket_mb=100, bucket_cap_mb=100,
                         gradient_as_bucket_view=True)
    assert seen["bucket_cap_mb"] == 100 and seen["gradient_as_bucket_view"] is True
    assert seen.get("forward_sync_buffers", seen.get("broadcast_buffers")) is False
    assert distributed.dist._DEFAULT_FIRST_BUCKET_BYTES == first


def test_threads_per_process(monkeypatch, clean_env):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 16)
    distributed.set_threads_per_process("hpu", 8)
    distributed.set_threads_per_process("hpu", 1)
    # torchrun with 4 of the 8 ranks on this machine (accel.launch reads its variables)
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="8", LOCAL_WORLD_SIZE="4")
    distributed.set_threads_per_process("cpu", 8)
    distributed.set_threads_per_process("cuda", 8)      # torch's default
    os.environ["OMP_NUM_THREADS"] = "3"
    distributed.set_threads_per_process("cpu", 8)       # the user's setting wins
    assert calls == [4, 12, 4]


def test_eager_yolox_on_hpu_is_refused_in_one_line(fake):
    from accel import policy
    os.environ["PT_HPU_LAZY_MODE"] = "0"
    with pytest.raises(UserError, match="YOLOX training on HPU in eager mode .* is not supported"):
        policy.require_lazy_or_compiled("hpu", compiled=False, recipe="YOLOX training")
    policy.require_lazy_or_compiled("hpu", compiled=True, recipe="YOLOX training")   # compile: fine
    os.environ["PT_HPU_LAZY_MODE"] = "1"
    policy.require_lazy_or_compiled("hpu", compiled=False, recipe="YOLOX training")
    policy.require_lazy_or_compiled("cpu", compiled=False, recipe="YOLOX training")


def test_ssd_autocast_on_hpu_keeps_the_bridge_default_op_lists(fake, tmp_path):
    from ssd import train as ssd_train
    args = ssd_train.build_parser().parse_args(["-d", "x", "--use-hpu", "--autocast"])
    accel.resolve_device(args, dynamic_shapes=True)
    seen = fake.imports["habana_frameworks.torch.core"]
    assert seen["PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST"] is None      # not YOLOX's lists
    assert seen["PT_HPU_AUTOCAST_FP32_OPS_LIST"] is None
    accel.Precision.from_args(args, torch.device("hpu"))
    assert "PT_HPU_AUTOCAST_FP32_OPS_LIST" not in os.environ
    mine = tmp_path / "bf16.txt"
    mine.write_text("conv2d\n")
    _drop_habana_modules()
    args = ssd_train.build_parser().parse_args(["-d", "x", "--use-hpu", "--autocast", "--hmp-bf16", str(mine)])
    accel.resolve_device(args)
    core = fake.imports["habana_frameworks.torch.core"]
    assert core["PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST"] == str(mine.resolve())


# ------------------------------------------------------------ Habana's loader for SSD on COCO 2017
# The checks below are those of HabanaAI/gaudi-pytorch-bridge 1.19.0,
# pytorch_helpers/dataloader/habana_dataloader/habana_dataloader/habana_dataset.py
# (HabanaDataLoader, _is_coco_dataset, SSDDataLoader, SSDMediaDataLoader._media_ssd_dl_handle_vars)
# and aeon_ssd_configurator.py (AeonSSDConfigurator), plus the SSD checks of HPUMediaPipe
# (habana_frameworks/medialoaders/torch/media_dataloader_mediapipe.py). Model-References 1.17.1
# PyTorch/computer_vision/detection/mlcommons/SSD/ssd/train.py calls the loader as
# HabanaDataLoader(dataset, batch_size=, shuffle=, sampler=, pin_memory=True,
# pin_memory_device="hpu", num_workers=) with its utils.COCODetection + SSDTransformer.
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]   # the only values aeon accepts
TORCH_DEFAULTS = (("batch_sampler", None), ("collate_fn", None), ("timeout", 0), ("worker_init_fn", None),
                  ("multiprocessing_context", None), ("generator", None), ("persistent_workers", False))


def _is_coco_2017(dataset):
    try:
        return "COCO 2017 Dataset" in dataset.data["info"]["description"]
    except Exception:
        return False


class FakeSsdPipeline:
    """Habana's SSD pipeline (aeon / media pipe): the checks at construction, then the reference's
    batches read from the manifest it builds (no augmentation here): training targets encoded per
    anchor, evaluation boxes ltrb padded to 200 and sizes as a pair of [B] tensors (h, w)."""

    def __init__(self, dataset, kwargs):
        import torchvision.transforms as T
        for name, allowed in TORCH_DEFAULTS:                    # SSDMediaDataLoader refuses others
            if kwargs.get(name) is not None and kwargs.get(name) != allowed:
                raise ValueError(f"'{name}' is supported only as {allowed}")
        sampler = kwargs.get("sampler")
        self.shuffle = kwargs.get("shuffle")                    # the media pipe's rule
        if self.shuffle is False and isinstance(sampler, torch.utils.data.DistributedSampler) \
                and sampler.shuffle is True:
            self.shuffle = True
        self.batch_size, self.drop_last = kwargs.get("batch_size"), kwargs.get("drop_last", False)
        transform = dataset.transform
        if not isinstance(transform.val, bool):
            raise ValueError("Unsupported value of transform.val")
        self.train = not transform.val
        compose = transform.img_trans if self.train else transform.trans_val
        if not isinstance(compose, T.Compose):
            raise ValueError("transform.img_trans / trans_val should be of type torchvision.transforms")
        extra = [transform.crop, transform.hflip, transform.normalize] if self.train else []
        if self.train and any(isinstance(t, T.Normalize) for t in compose.transforms):
            raise ValueError("Unsupported Normalize transform for SSD Train")
        self.size = self.mean = None
        for t in compose.transforms + extra:
            if isinstance(t, T.Resize):
                self.size = (t.size[0], t.size[1])
            elif isinstance(t, T.ToTensor):
                pass
            elif isinstance(t, T.Normalize):
                if t.mean != MEAN or t.std != STD:
                    raise ValueError("aeon Normalize supports only mean of [0.485, 0.456, 0.406]")
                self.mean, self.std = t.mean, t.std
            elif isinstance(t, T.ColorJitter):
                [180 * e for e in t.hue]                        # aeon converts hue to degrees
            elif "utils.SSDCropping" in str(type(t)):
                if not self.train or self.size is None or t.num_cropping_iterations < 1:
                    raise ValueError("Unsupported transform : " + str(type(t)))
            elif "utils.RandomHorizontalFlip" in str(type(t)):
                if t.p != 0.5:
                    raise ValueError("aeon RandomHorizontalFlip supports only probability of 0.5")
            else:
                raise ValueError("Unsupported transform: " + str(type(t)))
        if self.mean is None:
            raise ValueError("Unsupported output data type float32")
        if not os.path.isfile(dataset.annotate_file):           # the media pipe reads it itself
            raise FileNotFoundError(dataset.annotate_file)
        self.class_names = [f"{v}" for v in dataset.label_info.values()]
        self.manifest = []                                      # aeon's manifest
        for img_id, (image, size, annotations) in dataset.images.items():
            path = f"{dataset.img_folder}/{image}"
            if not os.path.isfile(path):                        # aeon fails later, reading it
                raise FileNotFoundError(path)
            h, w = size
            objects = [(bbox, dataset.label_info[label]) for bbox, label in annotations
                       if bbox[0] + bbox[2] <= w and bbox[1] + bbox[3] <= h]
            self.manifest.append((img_id, path, (h, w), objects))

    def __len__(self):
        n = len(self.manifest)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        import torchvision.transforms.functional as TF
        from PIL import Image
        from ssd import Encoder, dboxes300_coco
        encoder = Encoder(dboxes300_coco())
        for b in range(len(self)):
            entries = self.manifest[b * self.batch_size:(b + 1) * self.batch_size]
            imgs, boxes, labels = [], [], []
            for _, path, (h, w), objects in entries:
                with Image.open(path) as im:
                    im = im.convert("RGB").resize((self.size[1], self.size[0]), Image.BILINEAR)
                imgs.append(TF.normalize(TF.to_tensor(im), self.mean, self.std))
                ltrb = torch.tensor([[x / w, y / h, (x + bw) / w, (y + bh) / h]
                                     for (x, y, bw, bh), _ in objects]).reshape(-1, 4)
                lab = torch.tensor([self.class_names.index(n) for _, n in objects], dtype=torch.long)
                if self.train:
                    ltrb, lab = encoder.encode(ltrb, lab)
                else:
                    ltrb = torch.cat([ltrb, torch.zeros(200 - len(lab), 4)])
                    lab = torch.cat([lab, torch.zeros(200 - len(lab), dtype=torch.long)])
                boxes.append(ltrb)
                labels.append(lab)
            hw = torch.tensor([e[2] for e in entries])
            sizes = hw if self.train else (hw[:, 0], hw[:, 1])
            yield (torch.stack(imgs), torch.tensor([e[0] for e in entries]), sizes, torch.stack(boxes),
                   torch.stack(labels))


class FakeHabanaDataLoader:
    """habana_dataloader.HabanaDataLoader: its SSD pipeline for a COCO 2017 data set, torch's
    DataLoader(*args, **kwargs) for anything else or when the pipeline refuses the call."""
    made = []

    def __init__(self, *args, **kwargs):
        dataset = kwargs.get("dataset", args[0] if args else None)
        record = {"dataset": dataset, "kwargs": dict(kwargs)}
        self.made.append(record)
        try:
            if not _is_coco_2017(dataset):
                raise TypeError("'NoneType' object is not callable")     # no dataloader_type
            self.loader = FakeSsdPipeline(dataset, kwargs)
            record.update(path="ssd", shuffle=self.loader.shuffle)
        except Exception as exc:
            record.update(path="torch", error=str(exc))
            self.loader = torch.utils.data.DataLoader(*args, **kwargs)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


@pytest.fixture
def habana_loader(monkeypatch):
    """Habana's loader package, importable; the list of loaders made (one record each)."""
    made = []
    monkeypatch.setattr(FakeHabanaDataLoader, "made", made)
    module = type(sys)("habana_dataloader")
    module.HabanaDataLoader = FakeHabanaDataLoader
    monkeypatch.setitem(sys.modules, "habana_dataloader", module)
    return made


@pytest.fixture
def coco2017(shapes_coco, tmp_path):
    """The shapes set under a COCO 2017 json ``info`` (what the loader looks for), same images."""
    import json
    (tmp_path / "annotations").mkdir()
    for split in ("train2017", "val2017"):
        data = json.loads((shapes_coco / "annotations" / f"instances_{split}.json").read_text())
        data["info"]["description"] = "COCO 2017 Dataset"
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
        (tmp_path / split).symlink_to(shapes_coco / split)
    return tmp_path


def ssd_loaders(root, device, worker_type="HABANA", **args):
    """The loaders SSDRun builds for ``ssd/train.py -d root --batch-size 2 --dl-worker-type ...``."""
    from ssd.data import CocoDetection, coco_paths
    from ssd.engine import SSDRun
    run = SSDRun.__new__(SSDRun)
    run.args = argparse.Namespace(**{"dl_worker_type": worker_type, "batch_size": 2, "num_workers": 0,
                                     "val_batch_size": None, "disable_distributed_validation": False,
                                     "encode_in": "main", **args})
    run.info = accel.DistInfo(rank=0, local_rank=0, world_size=1)
    run.device, run.seed, run.rank0 = torch.device(device), 0, True
    train_dir, train_ann, val_dir, val_ann = coco_paths(root)
    run.train_set = CocoDetection(train_dir, train_ann, train=True, seed=0)
    run.val_set = CocoDetection(val_dir, val_ann, train=False)
    run._make_loaders()
    return run


def test_ssd_on_hpu_passes_habana_loader_coco_checks(fake, habana_loader, coco2017):
    from ssd import Encoder, dboxes300_coco
    run = ssd_loaders(coco2017, "hpu")
    train, val = habana_loader
    assert (train["path"], val["path"]) == ("ssd", "ssd"), (train.get("error"), val.get("error"))
    assert train["kwargs"] == {"batch_size": 2, "sampler": run.sampler, "drop_last": True, "num_workers": 0,
                               "shuffle": False, "pin_memory": True, "pin_memory_device": "hpu"}
    assert train["shuffle"] is True              # the single-card media pipe will shuffle
    assert val["kwargs"]["sampler"] == list(range(len(run.val_set))) and "collate_fn" not in val["kwargs"]
    layout = train["dataset"]
    assert list(layout.images) == run.train_set.ids and layout.label_info[0] == "background"
    assert layout.data is run.train_set.coco.dataset and layout.transform.crop.num_cropping_iterations == 1
    # training batches arrive encoded and the step is told so; they are what our encoder makes
    imgs, boxes, labels, ids, _ = next(iter(run.train_loader))
    assert run.targets_encoded and imgs.shape == (2, 3, 300, 300)
    assert boxes.shape == (2, 8732, 4) and labels.shape == (2, 8732) and labels.dtype == torch.long
    gt_boxes, gt_labels = (torch.from_numpy(a) for a in run.train_set.targets[ids[0].item()])
    gloc, glabel = Encoder(dboxes300_coco()).encode(gt_boxes, gt_labels)
    assert torch.allclose(boxes[0], gloc, atol=1e-5) and torch.equal(labels[0], glabel)
    # evaluation batches: ids and (height, width) as evaluate() reads them
    _, _, _, ids, sizes = next(iter(run.val_loader))
    assert ids.tolist() == run.val_set.ids[:2]
    assert sizes.tolist() == [list(run.val_set.source.size(i)) for i in ids.tolist()]


def _break(layout, how):
    if how == "no json info":
        del layout.data
    elif how == "flip p":
        layout.transform.hflip.p = 0.4
    elif how == "mean as tuple":
        layout.transform.normalize.mean = tuple(MEAN)
    elif how == "crop class":
        layout.transform.crop = type("Cropping", (), {"num_cropping_iterations": 1})()
    elif how == "file name":
        img_id, (name, size, anns) = next(iter(layout.images.items()))
        layout.images[img_id] = ("missing.jpg", size, anns)


@pytest.mark.parametrize("how", [None, "no json info", "flip p", "mean as tuple", "crop class", "file name",
                                 "collate_fn"])
def test_habana_loader_checks_have_teeth(fake, habana_loader, coco2017, how):
    """The fake refuses what Habana's loader refuses: each broken layout lands on torch's loader."""
    from ssd.data import CocoDetection, coco_paths, collate
    from ssd.reference_utils import ReferenceLayout
    train_dir, train_ann, _, _ = coco_paths(coco2017)
    layout = ReferenceLayout(CocoDetection(train_dir, train_ann, train=True))
    _break(layout, how)
    extra = {"collate_fn": collate} if how == "collate_fn" else {}
    FakeHabanaDataLoader(layout, batch_size=2, shuffle=True, **extra)
    assert habana_loader[-1]["path"] == ("ssd" if how is None else "torch")


def test_not_coco_2017_falls_back_inside_habana_loader(fake, habana_loader, shapes_coco, monkeypatch):
    """The shapes json is not COCO 2017: Habana's loader itself falls back to torch's (with our
    call), and the run still gets encoded training batches and evaluation ids/sizes. Batches are
    not pinned: pinning for the HPU needs Habana's runtime (torch 2.0.1 raises without it, newer
    torch ignores it with a warning); what is pinned where is test_policies_on_each_device's."""
    import ssd.loaders
    monkeypatch.setattr(ssd.loaders, "pin_memory_kwargs", lambda device: {})
    run = ssd_loaders(shapes_coco, "hpu")
    assert [m["path"] for m in habana_loader] == ["torch", "torch"]
    imgs, boxes, labels, ids, _ = next(iter(run.train_loader))
    assert run.targets_encoded and boxes.shape == (2, 8732, 4) and labels.shape == (2, 8732)
    _, _, _, ids, sizes = next(iter(run.val_loader))
    assert sizes.tolist() == [list(run.val_set.source.size(i)) for i in ids.tolist()]


@pytest.mark.parametrize("device,worker_type", [("cpu", "HABANA"), ("hpu", "MP")])
def test_habana_loader_never_built_off_hpu_or_for_mp(fake, habana_loader, coco2017, device, worker_type):
    from torch.utils.data import DataLoader

    from ssd.data import collate
    run = ssd_loaders(coco2017, device, worker_type)
    assert habana_loader == [] and not run.targets_encoded
    assert type(run.train_loader) is DataLoader and run.train_loader.collate_fn is collate
    assert type(run.val_loader) is DataLoader


def test_habana_val_loader_without_distributed_validation(fake, habana_loader, coco2017):
    """As the reference: rank 0 alone evaluates, on the whole set (no sampler, so the pipeline does
    not shard it); another rank gets an empty torch loader and builds Habana's for training only."""
    run = ssd_loaders(coco2017, "hpu", disable_distributed_validation=True)
    assert habana_loader[1]["path"] == "ssd" and habana_loader[1]["kwargs"]["sampler"] is None
    habana_loader.clear()
    run.rank0, run.info = False, accel.DistInfo(rank=1, local_rank=1, world_size=2)
    run._make_loaders()
    assert len(habana_loader) == 1 and list(run.val_loader) == []


# ------------------------------------------- mark_step order in the real train steps and evaluators
# backward -> mark_step -> optimizer.step -> mark_step in both trainers' step functions, and
# mark_step between forward and post-processing in both evaluators. The CPU plays a lazy-mode
# HPU through ``accel.hpu``'s seam (``events`` below), not through the import-hook fake above.

@pytest.fixture
def events(monkeypatch):
    """Treat the CPU as a lazy-mode HPU for ``accel.hpu.mark_step`` and record every flush.

    Patching the Habana seam itself (``is_hpu`` and the module loader that ``mark_step`` looks up
    at call time) records the calls whichever name the code imported ``mark_step`` under.
    """
    log = []
    fake_core = types.SimpleNamespace(mark_step=lambda: log.append("mark_step"))
    monkeypatch.setenv("PT_HPU_LAZY_MODE", "1")
    monkeypatch.setattr(hpu, "is_hpu", lambda device: torch.device(device).type == "cpu")
    monkeypatch.setattr(hpu, "_module", lambda name: fake_core if name == hpu.CORE else None)
    return log


class LrRecordingSGD(torch.optim.SGD):
    """Records zero_grad and (step, lr); its step checks every gradient is there."""

    def __init__(self, params, log):
        super().__init__(params, lr=0.1)
        self.log = log

    def zero_grad(self, set_to_none=True):
        self.log.append("zero_grad")
        return super().zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        self.log.append(("step", self.param_groups[0]["lr"]))
        assert all(p.grad is not None for g in self.param_groups for p in g["params"])
        return super().step(closure)


class TinyYOLOX(torch.nn.Module):
    """Stands in for the detector: ``model(inps, targets)`` -> loss dict, backward recorded."""

    def __init__(self, log):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        self.log = log

    def forward(self, inps, targets):
        self.log.append("forward")
        loss = (self.w * inps.mean()).pow(2).sum() + targets.sum() * 0
        loss.register_hook(lambda g: self.log.append("backward"))
        return {"total_loss": loss, "iou_loss": loss * 0.5, "num_fg": 3.0}


def test_yolox_train_step_order(events):
    from yolox.core.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.model = TinyYOLOX(events)
    trainer.forward_model, trainer.compiled = trainer.model, False   # as before_train without compile
    trainer.optimizer = LrRecordingSGD(trainer.model.parameters(), events)
    trainer.precision = accel.Precision("cpu")
    trainer.ema = None
    before = trainer.model.w.detach().clone()
    out = trainer.train_step(torch.ones(1, 3, 8, 8), torch.zeros(1, 2, 5))
    assert events == ["forward", "zero_grad", "backward", "mark_step", ("step", 0.1), "mark_step"]
    assert not torch.equal(trainer.model.w.detach(), before)          # the step did update
    assert not out["total_loss"].requires_grad and out["num_fg"] == 3.0


class TinySSD(torch.nn.Module):
    """[B, 3, 300, 300] -> ploc [B, 4, 8732], plabel [B, C, 8732]; backward recorded."""

    def __init__(self, log, num_classes=3):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(1, 4, 8732))
        self.conf = torch.nn.Parameter(torch.zeros(1, num_classes, 8732))
        self.log = log

    def forward(self, img):
        self.log.append("forward")
        scale = img.mean(dim=(1, 2, 3)).view(-1, 1, 1)
        ploc, plabel = self.loc * scale, self.conf * scale
        if torch.is_grad_enabled():
            ploc.register_hook(lambda g: self.log.append("backward"))
        return ploc, plabel


@pytest.mark.parametrize("splits", [1, 2])
def test_ssd_train_step_order(events, splits):
    from ssd import Encoder, Loss, dboxes300_coco
    from ssd.step import TrainStep

    dboxes = dboxes300_coco()
    model = TinySSD(events)
    optimizer = LrRecordingSGD(model.parameters(), events)
    step = TrainStep(model, Loss(dboxes), Encoder(dboxes), optimizer, accel.Precision("cpu"),
                     torch.device("cpu"), splits)
    imgs = torch.ones(2, 3, 300, 300)
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.6], [0, 0, 0, 0]], [[0.3, 0.3, 0.8, 0.9], [0.5, 0.1, 0.9, 0.4]]])
    labels = torch.tensor([[1, 0], [2, 1]])
    before = model.conf.detach().clone()
    total = step(imgs, boxes, labels, lr=0.025)
    per_split = ["forward", "backward", "mark_step"]
    assert events == ["zero_grad"] + per_split * splits + [("step", 0.025), "mark_step"]
    assert not torch.equal(model.conf.detach(), before)
    assert total.dim() == 0 and torch.isfinite(total)


def test_yolox_evaluator_marks_step_between_forward_and_postprocess(events, monkeypatch):
    import yolox.utils
    from yolox.evaluators.coco_evaluator import COCOEvaluator

    real = yolox.utils.postprocess

    def recording_postprocess(*args, **kwargs):
        events.append("postprocess")
        return real(*args, **kwargs)

    monkeypatch.setattr(yolox.utils, "postprocess", recording_postprocess)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            events.append("forward")
            out = torch.zeros(x.shape[0], 4, 5 + 2)
            out[..., :4] = torch.tensor([10.0, 10.0, 8.0, 8.0])
            out[..., 4:] = 0.9
            return out + self.w

    batches = [(torch.zeros(2, 3, 32, 32), None, (torch.tensor([32, 32]), torch.tensor([32, 32])),
                torch.tensor([1, 2])),
               (torch.zeros(1, 3, 32, 32), None, (torch.tensor([32]), torch.tensor([32])), torch.tensor([3]))]

    class Loader(list):
        dataset = types.SimpleNamespace(class_ids=[7, 9])

    evaluator = COCOEvaluator(Loader(batches), (32, 32), 0.01, 0.65, 2)
    rows, _, n_img = evaluator.predict(Model())
    assert events == ["forward", "mark_step", "postprocess"] * 2
    assert n_img == 3 and rows.shape[1] == 7 and len(rows) > 0


def test_ssd_evaluate_marks_step_between_forward_and_decode(events, monkeypatch):
    import ssd.evaluation as engine

    model = TinySSD(events)

    class RecordingEncoder:
        def decode_batch(self, ploc, plabel, **kwargs):
            events.append("decode")
            return [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))] * ploc.shape[0]

    scored = []
    monkeypatch.setattr(engine, "gather_and_score",
                        lambda coco, rows, ids, secs, n, keep_rows=False: scored.append((rows.shape, n)) or "result")
    loader = [(torch.ones(2, 3, 300, 300), None, None, torch.tensor([1, 2]), torch.tensor([[300, 300]] * 2)),
              (torch.ones(1, 3, 300, 300), None, None, torch.tensor([3]), torch.tensor([[300, 300]]))]
    dataset = types.SimpleNamespace(coco=None, ids=[1, 2, 3], cat_ids=[1, 2])
    model.train()
    assert engine.evaluate(model, loader, RecordingEncoder(), dataset, torch.device("cpu")) == "result"
    assert events == ["forward", "mark_step", "decode"] * 2
    assert scored == [((0, 7), 3)] and model.training
