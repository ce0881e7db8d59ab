"""The accelerator layer: the only code that knows about devices, precision and process groups."""
from accel.device import add_device_args, resolve_device, synchronize
from accel.distributed import (DistInfo, all_gather_object, all_reduce_mean, all_reduce_norm,
                               backend_for, barrier,
                               broadcast_object, destroy, dist_env, get_rank, get_world_size,
                               init_distributed, is_main_process, launch_local, set_threads_per_process,
                               unwrap, wrap_ddp)
from accel.errors import UserError, cli_entry
from accel.hpu import is_hpu, lazy_mode, mark_step
from accel.precision import Precision, add_precision_args, fp32_region

__all__ = [
    "add_device_args", "resolve_device", "is_hpu", "lazy_mode", "mark_step", "synchronize",
    "add_precision_args", "Precision", "fp32_region",
    "DistInfo", "dist_env", "init_distributed", "backend_for", "wrap_ddp", "unwrap", "barrier",
    "all_reduce_mean", "all_reduce_norm", "all_gather_object", "broadcast_object", "is_main_process", "get_rank",
    "get_world_size", "destroy", "launch_local", "set_threads_per_process",
    "UserError", "cli_entry",
]
