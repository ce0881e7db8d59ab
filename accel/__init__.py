"""The accelerator layer: the only code that knows about devices, precision and process groups.

The names below load on first use (PEP 562 module ``__getattr__``) instead of at ``import accel``:
device, precision and distributed import torch, while ``accel.errors`` (the one-line UserError and
``cli_entry`` every CLI uses) must stay importable without it, because the onnxruntime demo
(``detcore/deploy/runtime.py``, ``tools/demo.py --onnx``) runs exported models on numpy and
onnxruntime alone. ``from accel import X``, ``accel.X`` and ``accel.<submodule>`` work as before.
"""
import importlib

_EXPORTS = {
    "accel.device": ("add_device_args", "resolve_device", "synchronize"),
    "accel.distributed": ("DistInfo", "all_gather_object", "any_rank", "all_reduce_mean", "all_reduce_norm",
                          "backend_for", "barrier", "broadcast_object", "destroy", "dist_env", "get_rank",
                          "get_world_size", "init_distributed", "is_main_process", "launch_local",
                          "restart_count", "restart_reason", "set_threads_per_process", "unwrap", "wrap_ddp"),
    "accel.errors": ("UserError", "cli_entry"),
    "accel.hpu": ("is_hpu", "lazy_mode", "mark_step"),
    "accel.precision": ("Precision", "add_precision_args", "fp32_region"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "add_device_args", "resolve_device", "is_hpu", "lazy_mode", "mark_step", "synchronize",
    "add_precision_args", "Precision", "fp32_region",
    "DistInfo", "dist_env", "init_distributed", "backend_for", "wrap_ddp", "unwrap", "barrier",
    "all_reduce_mean", "all_reduce_norm", "all_gather_object", "broadcast_object", "is_main_process", "get_rank",
    "get_world_size", "destroy", "launch_local", "set_threads_per_process", "any_rank", "restart_count",
    "restart_reason",
    "UserError", "cli_entry",
]


def __getattr__(name):
    """Import the module that defines ``name`` (or the submodule ``accel.<name>``) on first use."""
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"accel.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"accel.{name}":
                raise
            raise AttributeError(f"module 'accel' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'accel' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
