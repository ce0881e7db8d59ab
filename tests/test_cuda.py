"""The CUDA paths on a real GPU: fp16 + GradScaler, bf16 autocast, channels_last, pinned loaders,
torch.compile (inductor) training and a one-rank NCCL DDP step, each through the project's own
builders (tools/train.py's Trainer, ssd/train.py's SSDRun) and accel's policies.

Without a CUDA GPU every test here is skipped by the module mark below, before any fixture or
model is built, so the CPU suite (tools/run_tests.sh) only reports them as skipped. They run via
``bash bench/gpu_check.sh`` on a CUDA machine, which selects them with ``-m cuda``.
"""
import copy
import math
import socket
from datetime import timedelta

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="CUDA test: torch.cuda.is_available() is False; run "
                              "`bash bench/gpu_check.sh` on a CUDA machine"),
]

DEVICE = "cuda"      # the builders' --device (one name, so a CPU dry run of the plumbing can swap it)
PRECISION_FLAG = {"fp16": "--fp16", "bf16": "--autocast"}
AUTOCAST_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}
# GradScaler starts at 2**16 and skips the optimizer step (halving the scale) when the scaled
# gradients overflow fp16, so the first step or two may legitimately leave the weights untouched.
MAX_STEPS = 8
LR = 0.01


# ----------------------------------------------------------------------------- builders
def yolox_trainer(shapes_coco, out, *flags, batch=2):
    """tools/train.py's Trainer for yolox-nano on the shapes set at 160 px, after before_train()
    (model on the GPU in the trainer's memory format, pinned loader, optimizer, precision)."""
    from yolox.core.cli import build_exp
    from yolox_tools import SHAPES_EXP, TINY, load_tool

    train = load_tool("train")
    args = train.make_parser().parse_args(
        ["-f", SHAPES_EXP, "-b", str(batch), "--data_dir", str(shapes_coco), "--seed", "0",
         "--device", DEVICE, *flags, *TINY, "output_dir", str(out)])
    train.check_args(args)
    trainer = build_exp(args).get_trainer(args)
    trainer.before_train()
    return trainer


def ssd_run(shapes_coco, out, *flags):
    """ssd/train.py's SSDRun at 300 px, batch 2, on the GPU (model, loss, pinned loaders, step)."""
    from yolox_tools import ssd_run as build

    return build(shapes_coco, out, "-b", "2", "--device", DEVICE, *flags)


def yolox_batch(trainer):
    """The next training batch as Trainer.train_one_iter feeds it to train_step."""
    inps, targets = trainer.next_batch()
    inps, targets = trainer.exp.preprocess(inps, targets, trainer.input_size)
    return inps.contiguous(memory_format=trainer.memory_format), targets


def bare(model):
    from accel import unwrap
    return unwrap(model)


def snapshot(model):
    return [p.detach().clone() for p in bare(model).parameters()]


def delta(before, model):
    """All parameters' change since ``snapshot``, as one flat vector."""
    return torch.cat([(p.detach() - b).flatten().float() for b, p in zip(before, bare(model).parameters())])


def all_finite(model):
    return all(torch.isfinite(p).all() for p in bare(model).parameters())


class ConvDtypes:
    """Records the output dtype of the model's first convolution: what autocast really ran."""

    def __init__(self, model):
        conv = next(m for m in bare(model).modules() if isinstance(m, torch.nn.Conv2d))
        self.seen = []
        self.handle = conv.register_forward_hook(lambda m, i, out: self.seen.append(out.dtype))

    def __enter__(self):
        return self.seen

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture
def exact_fp32():
    """True fp32 for comparisons: cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere
    and later, so two layouts or two compilers would otherwise differ by TF32 rounding (around
    1e-3) rather than by a bug."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def need_bf16(mode):
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16 support (needs Ampere or later)")


# ----------------------------------------------------------------------------- precision
def assert_mixed_precision_step(mode, seen, before, model, precision):
    """What both models' mixed-precision tests claim: the convolutions ran in the mode's dtype,
    a step was applied, the weights stay finite, and fp16 (only) has a finite positive scale."""
    assert seen and set(seen) == {AUTOCAST_DTYPE[mode]}, seen
    assert delta(before, model).abs().max() > 0, f"no step applied in {MAX_STEPS} steps"
    assert all_finite(model)
    if mode == "fp16":
        scale = precision.scaler.get_scale()
        assert math.isfinite(scale) and scale > 0, scale
    else:
        assert precision.scaler is None


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_yolox_mixed_precision_training_step(mode, shapes_coco, tmp_path):
    """--fp16 / --autocast through the Trainer: the convolutions run in the low-precision dtype,
    losses stay finite, the weights move (fp16: once GradScaler stops skipping overflowed steps)
    and the scale stays finite; bf16 has no scaler."""
    need_bf16(mode)
    trainer = yolox_trainer(shapes_coco, tmp_path, PRECISION_FLAG[mode])
    try:
        assert trainer.precision.mode == mode
        before = snapshot(trainer.model)
        with ConvDtypes(trainer.model) as seen:
            for _ in range(MAX_STEPS):
                trainer.set_lr(LR)          # the warm-up schedule starts at lr 0
                trainer.train_one_iter()
                losses = trainer.check_finite()    # raises on a non-finite loss
                if delta(before, trainer.model).abs().max() > 0:
                    break
        assert all(math.isfinite(v) for v in losses.values()), losses
        assert_mixed_precision_step(mode, seen, before, trainer.model, trainer.precision)
    finally:
        trainer.after_train()


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_ssd_mixed_precision_training_step(mode, shapes_coco, tmp_path):
    """The same claims for SSD300 at 300 px, batch 2, through SSDRun's TrainStep."""
    need_bf16(mode)
    run = ssd_run(shapes_coco, tmp_path, PRECISION_FLAG[mode])
    try:
        assert run.precision.mode == mode
        batches = iter(run.train_loader)
        before = snapshot(run.net)
        with ConvDtypes(run.net) as seen:
            for _ in range(MAX_STEPS):
                imgs, boxes, labels = next(batches)[:3]
                loss = float(run.step(imgs, boxes, labels, LR))
                assert math.isfinite(loss), loss
                if delta(before, run.net).abs().max() > 0:
                    break
        assert_mixed_precision_step(mode, seen, before, run.net, run.precision)
    finally:
        run.lock.release()


# ----------------------------------------------------------------------------- layout, loaders
def test_yolox_channels_last_equals_contiguous(shapes_coco, tmp_path, exact_fp32):
    """accel.policy puts YOLOX in channels_last on CUDA; the trainer's model really is NHWC and
    its detections on a real batch equal those of an NCHW copy of the same weights."""
    from accel.policy import memory_format
    from yolox_tools import layout_bearing

    assert memory_format("cuda", True) == torch.channels_last
    trainer = yolox_trainer(shapes_coco, tmp_path)
    try:
        model = bare(trainer.model)
        assert layout_bearing(model) and all(w.is_contiguous(memory_format=torch.channels_last)
                                             for w in layout_bearing(model))
        nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
        assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in layout_bearing(nchw))
        model.eval()
        inps, _ = yolox_batch(trainer)
        assert inps.is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            out_nhwc = model(inps)
            out_nchw = nchw(inps.contiguous())
        torch.testing.assert_close(out_nhwc, out_nchw, rtol=1e-4, atol=1e-4)
    finally:
        trainer.after_train()


def test_loaders_pin_memory_on_cuda(shapes_coco, tmp_path):
    """accel.policy.pin_memory_kwargs pins for CUDA, and both projects' real training loaders
    hand out page-locked batches (what makes ``non_blocking=True`` copies asynchronous)."""
    from accel.policy import pin_memory_kwargs

    assert pin_memory_kwargs("cuda") == {"pin_memory": True}
    trainer = yolox_trainer(shapes_coco, tmp_path / "yolox")
    try:
        assert trainer.train_loader.pin_memory
        inps, targets = next(trainer.train_iter)[:2]
        assert inps.is_pinned() and targets.is_pinned()
    finally:
        trainer.after_train()
    run = ssd_run(shapes_coco, tmp_path / "ssd")
    try:
        assert run.train_loader.pin_memory and run.val_loader.pin_memory
        imgs, boxes, labels = next(iter(run.train_loader))[:3]
        assert imgs.is_pinned() and boxes.is_pinned() and labels.is_pinned()
    finally:
        run.lock.release()


# ----------------------------------------------------------------------------- torch.compile
def close_steps(compiled, eager):
    """Compiled and eager results of one training step from the same weights on the same batch:
    (loss, weight change) each. Losses agree to 1e-3 relative; the weight changes point the
    same way (cosine > 0.99), i.e. the compiled backward computed the same gradients."""
    (loss_c, step_c), (loss_e, step_e) = compiled, eager
    assert math.isfinite(loss_c) and math.isfinite(loss_e)
    assert abs(loss_c - loss_e) <= 1e-3 * abs(loss_e), (loss_c, loss_e)
    assert step_c.norm() > 0 and step_e.norm() > 0
    cosine = torch.nn.functional.cosine_similarity(step_c, step_e, dim=0)
    assert cosine > 0.99, float(cosine)


def test_yolox_inductor_training_matches_eager(shapes_coco, tmp_path, exact_fp32):
    """--use-torch-compile on CUDA compiles with inductor (accel.policy.compile_backend) and a
    compiled training step equals the eager one."""
    import torch._dynamo

    from accel.policy import compile_backend

    assert compile_backend("cuda") == "inductor"
    torch._dynamo.reset()
    compiled = yolox_trainer(shapes_coco, tmp_path / "compiled", "--use-torch-compile")
    eager = yolox_trainer(shapes_coco, tmp_path / "eager")
    try:
        assert compiled.forward_model is not compiled.model
        eager.model.load_state_dict(compiled.model.state_dict())
        inps, targets = yolox_batch(compiled)
        results = []
        for trainer in (compiled, eager):
            trainer.set_lr(LR)
            before = snapshot(trainer.model)
            loss = float(trainer.train_step(inps, targets)["total_loss"])
            results.append((loss, delta(before, trainer.model)))
        close_steps(*results)
    finally:
        compiled.after_train()
        eager.after_train()
        torch._dynamo.reset()


def test_ssd_inductor_training_matches_eager(shapes_coco, tmp_path, exact_fp32):
    """The same for SSDRun's --use-torch-compile at 300 px, batch 2."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled = ssd_run(shapes_coco, tmp_path / "compiled", "--use-torch-compile")
    eager = ssd_run(shapes_coco, tmp_path / "eager")
    try:
        assert compiled.model is not compiled.net
        eager.net.load_state_dict(compiled.net.state_dict())
        imgs, boxes, labels = next(iter(compiled.train_loader))[:3]
        results = []
        for run in (compiled, eager):
            before = snapshot(run.net)
            loss = float(run.step(imgs, boxes, labels, LR))
            results.append((loss, delta(before, run.net)))
        close_steps(*results)
    finally:
        compiled.lock.release()
        eager.lock.release()
        torch._dynamo.reset()


# ----------------------------------------------------------------------------- NCCL DDP
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nccl_group():
    """A one-rank process group on the backend accel picks for CUDA (nccl).

    accel.init_distributed is a no-op for a single process (nothing to join), so the group is
    opened here directly, with the backend from accel.backend_for."""
    import torch.distributed as dist

    from accel import backend_for, destroy

    backend = backend_for("cuda")
    assert backend == "nccl"
    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    torch.cuda.set_device(0)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=timedelta(seconds=120))
    yield
    destroy()


def test_single_process_nccl_ddp_training_step(shapes_coco, tmp_path, nccl_group, monkeypatch):
    """The Trainer's model wrapped by accel.wrap_ddp (its real DDP settings) trains one step over
    NCCL, and accel's collectives work on that group."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import accel
    import accel.distributed

    # wrap_ddp returns the bare model when the world has one process (DDP would only cost
    # there); claiming two makes it build the DDP it builds for N ranks, which then really
    # runs over the one-rank NCCL group above (DDP asks the group, not this function).
    with monkeypatch.context() as patch:
        patch.setattr(accel.distributed, "get_world_size", lambda: 2)
        trainer = yolox_trainer(shapes_coco, tmp_path)
    try:
        assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
        assert isinstance(trainer.model, DistributedDataParallel)
        assert trainer.model.device_ids == [torch.cuda.current_device()]
        before = snapshot(trainer.model)
        trainer.set_lr(LR)
        trainer.train_one_iter()
        losses = trainer.check_finite()
        assert all(math.isfinite(v) for v in losses.values()), losses
        assert delta(before, trainer.model).abs().max() > 0
        assert all_finite(trainer.model)
        values = torch.arange(4.0, device="cuda")
        assert torch.equal(accel.all_reduce_mean(values), values)
        assert accel.broadcast_object({"epoch": 3}) == {"epoch": 3}
        assert accel.all_gather_object(7) == [7]
        accel.barrier()
    finally:
        trainer.after_train()
