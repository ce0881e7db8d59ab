"""Device-dependent decisions that both detectors share, one small named function each.

Model and trainer code asks these instead of testing the device type itself, so "what differs
on HPU / CUDA / CPU" has one home (a test greps the rest of the tree for device checks).
"""
import torch
from loguru import logger

from accel import hpu
from accel.errors import UserError


def pin_memory_kwargs(device):
    """DataLoader pinning: page-locked host memory for the accelerator the batches go to.

    CUDA pins for CUDA; HPU pins for the HPU (``pin_memory_device="hpu"``, as Habana's recipes);
    the CPU has nothing to pin for.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return {"pin_memory": True}
    if kind == "hpu":
        return {"pin_memory": True, "pin_memory_device": "hpu"}
    return {}


def use_channels_last(device):
    """NHWC convolutions pay off on CPU (oneDNN) and CUDA (cuDNN); the HPU graph picks its own."""
    return torch.device(device).type in ("cpu", "cuda")


def memory_format(device, wanted=True):
    return torch.channels_last if wanted and use_channels_last(device) else torch.contiguous_format


def loss_device(device):
    """Where a loss with data-dependent shapes runs: the host on HPU (as Habana's YOLOX head
    does, because dynamic shapes compile poorly in the HPU graph), the device itself elsewhere."""
    return torch.device("cpu") if hpu.is_hpu(device) else torch.device(device)


def script_loss(device):
    """Habana's recipe runs the host-side loss as TorchScript; eager elsewhere (same numbers)."""
    return hpu.is_hpu(device)


def postprocess_device(device):
    """Where detections are decoded and NMS'd at eval: the host on HPU (Habana's recipes move
    the outputs to the CPU: ``nonzero``/NMS have data-dependent shapes), the device elsewhere."""
    return torch.device("cpu") if hpu.is_hpu(device) else torch.device(device)


def sgd_class(device):
    """Habana's fused SGD on HPU (both recipes), torch's SGD elsewhere. Both keep the same
    state dict (``momentum_buffer`` per parameter), so a checkpoint moves between them."""
    return hpu.fused_sgd_class() if hpu.is_hpu(device) else torch.optim.SGD


def ema_class(device, default):
    """Habana's fused EMA on HPU (its YOLOX recipe), ``default`` (ModelEMA) elsewhere; both
    expose ``update(model)``, ``ema`` and ``updates``, which is all checkpoints use."""
    return hpu.fused_ema_class() if hpu.is_hpu(device) else default


def chunk_items(device, items, work_per_item, cpu_budget):
    """How many of ``items`` to process per pass. On the CPU, passes of about ``cpu_budget``
    work units stay in cache (the SSD encoder's [b, G, A] IoU runs up to ~2x faster in chunks);
    accelerators take everything in one pass."""
    if torch.device(device).type != "cpu":
        return max(items, 1)
    return max(1, cpu_budget // max(1, work_per_item))


def compile_backend(device):
    """torch.compile backend: Habana's ``hpu_backend`` (eager mode only) or inductor."""
    if hpu.is_hpu(device):
        if hpu.lazy_mode():
            raise UserError("--use-torch-compile on HPU needs eager mode: set PT_HPU_LAZY_MODE=0 "
                            "(lazy mode and torch.compile cannot be combined)")
        return "hpu_backend"
    return "inductor"


def require_lazy_or_compiled(device, compiled, recipe):
    """Habana's YOLOX runs on HPU in lazy mode (or compiled); plain eager HPU it does not
    support, so refuse that combination in one line instead of running it."""
    if hpu.is_hpu(device) and not hpu.lazy_mode() and not compiled:
        raise UserError(f"{recipe} on HPU in eager mode (PT_HPU_LAZY_MODE=0) is not supported, as in "
                        "Habana's recipe: unset PT_HPU_LAZY_MODE (lazy mode) or add "
                        "--use-torch-compile")


# Inductor settings for CPU training graphs (bench/compile_blocks.py, bench/yolox_step.py --compile).
# With the defaults, the backward of each Conv-BN-SiLU writes the recomputed BN output and sigmoid
# to full-size float32 buffers and reads them back, and BN statistics use Welford (a division per
# element): a YOLOX-S stem block ran at 0.62-0.65x eager in bf16. Inlining re-read pointwise values
# instead of realizing them and two-pass variance took that block to 0.84x and the whole YOLOX-S
# bf16 step from 0.99x to 1.02-1.05x eager (2-core AMX Xeon; the convolutions are oneDNN's either way).
CPU_INDUCTOR_OPTIONS = {
    "realize_reads_threshold": 100,
    "realize_opusers_threshold": 100,
    "cpp.use_two_step_variance_threshold": 1 << 62,
}


def inductor_options(device):
    """``torch.compile`` options for inductor on ``device``: CPU_INDUCTOR_OPTIONS on the CPU (those
    this torch knows; older releases lack some), none elsewhere (GPU kernels are Triton's)."""
    if torch.device(device).type != "cpu":
        return None
    from torch._inductor import config

    def known(key):
        *groups, name = key.split(".")
        node = config
        for group in groups:
            node = getattr(node, group, None)
        return node is not None and hasattr(node, name)

    return {k: v for k, v in CPU_INDUCTOR_OPTIONS.items() if known(k)} or None


def compile_model(model, device):
    """``torch.compile`` with the device's backend (and inductor's CPU options); the caller keeps
    the bare module for checkpoints (its state-dict keys have no ``_orig_mod.`` prefix)."""
    backend = compile_backend(device)
    logger.info(f"torch.compile with backend {backend}")
    if backend != "inductor":
        return torch.compile(model, backend=backend)
    return torch.compile(model, backend=backend, options=inductor_options(device))


def loader_class(worker_type, device):
    """The DataLoader class for ``--dl-worker-type``: torch's, or Habana's on HPU.

    HABANA off HPU, or without the habana_dataloader package, falls back to torch's loader
    and says so once.
    """
    from torch.utils.data import DataLoader

    if worker_type != "HABANA":
        return DataLoader
    if not hpu.is_hpu(device):
        logger.info(f"--dl-worker-type HABANA needs --device hpu; using the torch DataLoader on "
                    f"{torch.device(device).type}")
        return DataLoader
    cls = hpu.dataloader_class()
    if cls is None:
        logger.info("--dl-worker-type HABANA: habana_dataloader is not importable; using the "
                    "torch DataLoader")
        return DataLoader
    return cls


def default_worker_type():
    """The SSD recipe's default: Habana's loader inside the Habana stack, torch's elsewhere."""
    return "HABANA" if hpu.stack_installed() else "MP"



def reserve_device_memory(device, fraction=0.9):
    """Upstream YOLOX's ``--occupy``: grab most free CUDA memory once so the caching allocator
    keeps it (fewer fragmentation stalls later). Other devices have nothing to reserve."""
    if torch.device(device).type != "cuda":
        logger.info(f"--occupy reserves CUDA memory; nothing to do on {torch.device(device).type}")
        return
    free, _ = torch.cuda.mem_get_info(device)
    block = torch.empty(int(free * fraction) // 4, dtype=torch.float32, device=device)
    del block
    logger.info(f"--occupy: reserved {free * fraction / 2**30:.1f} GiB of CUDA memory")
