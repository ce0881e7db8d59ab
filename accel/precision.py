"""Mixed precision behind one object, so trainers never branch on device or precision flags.

Modes: fp32; bf16 via torch.autocast (cpu, cuda, hpu); fp16 + GradScaler (cuda only); and on HPU
the legacy Habana Mixed Precision (HMP), which rewrites ops globally from two op-list files.
"""
import contextlib

import torch
from loguru import logger

from accel import hpu
from accel.errors import UserError
from accel.hpu import is_hpu, mark_step
from accel.oplists import DEFAULT_BF16_OPS, DEFAULT_FP32_OPS, op_list, prepare_hpu_env

MODES = ("fp32", "bf16", "fp16")


def add_precision_args(parser):
    """Add the precision flags shared by every training / eval entry point."""
    group = parser.add_argument_group("precision")
    group.add_argument("--autocast", action="store_true",
                       help="bf16 torch.autocast (cpu, cuda, hpu; on hpu with the op-list files)")
    group.add_argument("--fp16", action="store_true", help="fp16 autocast + GradScaler (cuda only)")
    group.add_argument("--hmp", action="store_true",
                       help="Habana mixed precision (HPU); elsewhere runs as bf16 autocast")
    group.add_argument("--hmp-opt-level", dest="hmp_opt_level", choices=("O1", "O2"), default="O1",
                       help="HMP optimisation level (O1: per-op lists from the two files)")
    group.add_argument("--hmp-bf16", dest="hmp_bf16", default=None, metavar="FILE",
                       help=f"ops run in bf16 (default: {DEFAULT_BF16_OPS.name})")
    group.add_argument("--hmp-fp32", dest="hmp_fp32", default=None, metavar="FILE",
                       help=f"ops kept in fp32 (default: {DEFAULT_FP32_OPS.name})")
    group.add_argument("--hmp-verbose", dest="hmp_verbose", action="store_true",
                       help="let HMP log every cast it inserts")
    return parser


def _cuda_grad_scaler():
    """torch.amp.GradScaler("cuda") (torch >= 2.3), torch.cuda.amp.GradScaler before that."""
    scaler = getattr(torch.amp, "GradScaler", None)
    return scaler("cuda") if scaler is not None else torch.cuda.amp.GradScaler()


_HMP_CONVERTED = []   # HMP rewrites ops process-wide, so whether it is on is process state


def fp32_region(device):
    """Context for code that must run in fp32 inside a mixed-precision forward (the losses):
    torch.autocast off for ``device`` and, once Habana mixed precision has converted this
    process, its casts off too (as Habana's YOLOX head computes its loss)."""
    autocast_off = torch.autocast(torch.device(device).type, enabled=False)
    if not _HMP_CONVERTED:
        return autocast_off             # a plain autocast context: torch.compile traces it
    stack = contextlib.ExitStack()
    stack.enter_context(autocast_off)
    stack.enter_context(hpu.hmp().disable_casts())
    return stack


def cpu_bf16_is_native():
    """Whether oneDNN has bf16 kernels on this CPU (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX).

    Without them a bf16 convolution falls back to ATen's slow path (``_slow_conv2d_*`` over a bf16
    GEMM at well under 1 GFLOP/s: a YOLOX-S bf16 step measured 11x slower than fp32 on an AVX2 EPYC)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if probe is None else bool(probe())   # no probe in this torch: nothing to say


def _cpu_capability():
    """ATen's CPU kernel level ("AVX2", "AVX512", ...); torch < 2.1 (Habana's oldest containers)
    has no ``torch.backends.cpu`` to ask."""
    backend = getattr(torch.backends, "cpu", None)
    return backend.get_cpu_capability() if backend is not None else "capability unknown"


class Precision:
    """Forward context + backward/step for one precision mode on one device."""

    def __init__(self, device, mode="fp32", hmp=False, bf16_ops=None, fp32_ops=None,
                 opt_level="O1", verbose=False):
        self.device = torch.device(device)
        if mode not in MODES:
            raise UserError(f"precision mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "fp16" and self.device.type != "cuda":
            raise UserError(f"--fp16 needs --device cuda (got {self.device.type}); "
                            "use --autocast for bf16 instead")
        if hmp and not is_hpu(self.device):
            raise UserError(f"--hmp runs only on --device hpu (got {self.device.type})")
        self.mode = mode
        self.hmp = None
        if hmp:
            self.hmp = hpu.hmp()
            self.hmp.convert(opt_level=opt_level, bf16_file_path=str(bf16_ops),
                             fp32_file_path=str(fp32_ops), isVerbose=verbose)
            _HMP_CONVERTED.append(True)
        self.scaler = _cuda_grad_scaler() if mode == "fp16" else None
        if mode == "bf16" and self.device.type == "cpu" and not cpu_bf16_is_native():
            logger.warning(f"bf16 on this CPU ({_cpu_capability()}, no AVX-512/AMX) "
                           "has no native kernels: convolutions take a slow fallback path, about 10x slower "
                           "than fp32; drop --autocast/--hmp to train in fp32 here")

    @classmethod
    def from_args(cls, args, device):
        """Build from the ``add_precision_args`` flags; HMP flags off HPU become bf16 autocast."""
        device = torch.device(device)
        chosen = [f for f in ("autocast", "fp16", "hmp") if getattr(args, f, False)]
        if len(chosen) > 1:
            raise UserError(f"--{' and --'.join(chosen)} are mutually exclusive (pick one)")
        if getattr(args, "fp16", False):
            return cls(device, "fp16")
        if getattr(args, "hmp", False):
            bf16_ops, fp32_ops = op_list(args, "bf16"), op_list(args, "fp32")
            if is_hpu(device):
                return cls(device, "bf16", hmp=True, bf16_ops=bf16_ops, fp32_ops=fp32_ops,
                           opt_level=args.hmp_opt_level, verbose=args.hmp_verbose)
            logger.info(f"--hmp is Habana-only; on {device.type} it runs as torch.autocast bf16")
            return cls(device, "bf16")
        if getattr(args, "autocast", False):
            if is_hpu(device):
                prepare_hpu_env(args)
            return cls(device, "bf16")
        return cls(device)

    @property
    def dtype(self):
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.mode]

    def autocast(self):
        """Context for forward + loss. HMP casts globally, so it (like fp32) needs no context."""
        if self.mode == "fp32" or self.hmp is not None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss):
        """Backward (scaled for fp16), then flush the lazy HPU graph."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        mark_step(self.device)

    def step(self, optimizer, clip_norm=None):
        """Optimizer step (unscaled for fp16, without HMP casts), then flush the lazy HPU graph.

        ``clip_norm``: clip the gradients' global L2 norm first (on the unscaled fp16 gradients);
        the norm stays a device tensor, so clipping adds no host sync."""
        if clip_norm:
            if self.scaler:
                self.scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        elif self.hmp is not None:
            with self.hmp.disable_casts():
                optimizer.step()
        else:
            optimizer.step()
        mark_step(self.device)

    def backward_and_step(self, loss, optimizer):
        """The trainer contract: backward -> mark_step -> optimizer.step -> mark_step.

        Zeroing gradients stays with the caller (it may accumulate over batch splits).
        """
        self.backward(loss)
        self.step(optimizer)

    def state_dict(self):
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state):
        if self.scaler and state:
            self.scaler.load_state_dict(state)
