"""Process groups for torchrun, mpirun and srun alike; every helper is a no-op in a single process.

Which launcher started us, and so the ranks and the rendezvous address, is ``accel.launch``'s
business. The hang watchdog (``accel.watchdog``) names a rank that stops making progress within
``--dist-timeout``; the process group's own timeout stays behind it as a backstop, so a rank that
dies makes the others fail with an error instead of waiting forever.
"""
import inspect
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from loguru import logger

from accel import errors, hpu, launch, watchdog
from accel.errors import UserError

DEFAULT_TIMEOUT_S = 1800


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def dist_env(env=None):
    """Rank / local rank / world size from whichever launcher started us (single process if
    none; ``accel.launch.detect`` says which launcher wins when several left variables)."""
    found = launch.detect(env)
    return DistInfo(found.rank, found.local_rank, found.world_size)


def backend_for(device):
    """hccl on Gaudi, nccl on CUDA, gloo on CPU."""
    return {"hpu": "hccl", "cuda": "nccl"}.get(torch.device(device).type, "gloo")


def set_rendezvous(url):
    """Upstream YOLOX's ``--dist-url tcp://HOST:PORT`` -> MASTER_ADDR / MASTER_PORT."""
    match = re.fullmatch(r"tcp://([^:/]+):(\d+)/?", url.strip())
    if not match:
        raise UserError(f"--dist-url {url!r}: expected tcp://HOST:PORT (or auto)")
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = match.group(1), match.group(2)


def init_distributed(device, timeout_s=DEFAULT_TIMEOUT_S, backend=None):
    """Join the process group described by the launcher (``accel.launch``); no-op for one
    process. Starts the hang watchdog, which acts after ``timeout_s`` without progress.

    The rendezvous address (mpirun sets none: single-node defaults; srun: the step's first host
    and a port from the job id) and RANK/LOCAL_RANK/WORLD_SIZE are exported, so torch's
    ``env://`` rendezvous and code that only knows torchrun's variables see the same ranks.
    """
    found = launch.detect()
    info = DistInfo(found.rank, found.local_rank, found.world_size)
    if info.world_size == 1 or _active():
        return info
    os.environ.update(MASTER_ADDR=found.master_addr, MASTER_PORT=str(found.master_port),
                      RANK=str(info.rank), LOCAL_RANK=str(info.local_rank), WORLD_SIZE=str(info.world_size))
    backend = backend or backend_for(device)
    if backend == "hccl":
        hpu.register_hccl()
    timeout = timedelta(seconds=watchdog.process_group_timeout(timeout_s))
    if info.rank != 0:
        wait_for_rendezvous(found.master_addr, found.master_port, timeout_s, info, found.launcher)
    dist.init_process_group(backend=backend, store=_attempt_store(info, timeout), rank=info.rank,
                            world_size=info.world_size, timeout=timeout)
    watchdog.start(found, timeout_s, restart_count())
    # a rank that fails ends the others with its cause; a failed collective names who is missing
    errors.on_end(failed=watchdog.end_run, collective_failed=watchdog.collective_failed)
    logger.info(f"rank {info.rank}/{info.world_size} (local {info.local_rank}) joined via {backend} at "
                f"{found.master_addr}:{found.master_port} (launcher: {found.launcher})")
    return info


def wait_for_rendezvous(addr, port, timeout_s, info, launcher, poll_s=0.5):
    """Wait until something listens at the rendezvous address (rank 0's store, or torchrun's),
    at most ``timeout_s`` (--dist-timeout); then one line naming the address and the missing
    rank. Why: without it a rank whose rank 0 never started (a Slurm step of 2 tasks run as one
    process, a wrong MASTER_ADDR) waits in torch's store client for up to twice the timeout and
    ends with pages of C++ stack frames."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((addr, int(port)), timeout=max(poll_s, 0.1)):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise UserError(f"rank {info.rank} of {info.world_size} ({launcher}): nothing answers at the "
                                f"rendezvous address {addr}:{port} after {timeout_s:g} s (--dist-timeout): rank 0 "
                                "never started or runs elsewhere; start every rank (e.g. srun -n "
                                f"{info.world_size} ...) or point MASTER_ADDR/MASTER_PORT at rank 0") from None
            time.sleep(poll_s)


def _attempt_store(info, timeout):
    """The launcher's key-value store (env://), with this attempt's keys under their own prefix.

    torchrun keeps one store alive across ``--max-restarts``, and the previous worker group's
    addresses stay in it: a restarted rank that read its peer's stale gloo address before the
    peer wrote the new one failed with "connectFullMesh ... Connection refused" (reproduced by
    tests/test_accel_distributed.py with a slow restarted rank 0). A prefix per restart makes
    every attempt meet only its own group.
    """
    store, _, _ = next(dist.rendezvous("env://", info.rank, info.world_size, timeout=timeout))
    return dist.PrefixStore(f"detkit/attempt_{restart_count()}", store)


def _active():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if _active() else launch.detect().rank


def get_world_size():
    return dist.get_world_size() if _active() else 1


def is_main_process():
    return get_rank() == 0


def wrap_ddp(model, device, hpu_first_bucket_mb=None, **kwargs):
    """DistributedDataParallel when running with several processes, the model itself otherwise.

    Buffers (BN statistics) are not re-broadcast every forward, as in both recipes. Extra
    keyword arguments go to DistributedDataParallel unchanged. On HPU the first gradient bucket
    is ``hpu_first_bucket_mb`` (Habana's recipes set torch's module default: YOLOX 200 MB,
    SSD 100 MB).
    """
    if get_world_size() == 1:
        return model
    device = torch.device(device)
    if device.type == "hpu" and hpu_first_bucket_mb:
        dist._DEFAULT_FIRST_BUCKET_BYTES = int(hpu_first_bucket_mb * 1024 * 1024)
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch >= 2.15 renamed the switch; the old name still works there but warns.
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        kwargs.setdefault("forward_sync_buffers", False)
    else:
        kwargs.setdefault("broadcast_buffers", False)
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        kwargs.setdefault("device_ids", [index])
    return ddp(model, **kwargs)


def unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def barrier():
    if _active():
        dist.barrier()


def all_reduce_mean(tensor):
    """Mean of ``tensor`` over ranks, as a new tensor (the input is left untouched)."""
    if not _active():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


@torch.no_grad()
def all_reduce_norm(model):
    """Average every batch-norm running mean/var over ranks, in place (upstream YOLOX's
    ``all_reduce_norm``): each rank's statistics saw only its own shard, and evaluation must
    score the same model on every rank, equal to a one-process evaluation."""
    if not _active():
        return
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
             and m.track_running_stats and m.running_mean is not None]
    for buf in [b for m in norms for b in (m.running_mean, m.running_var)]:
        buf.copy_(all_reduce_mean(buf))


def all_gather_object(obj):
    """Picklable ``obj`` from every rank, as a list indexed by rank."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src=0):
    """``obj`` from rank ``src`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def set_threads_per_process(device, world_size):
    """Intra-op threads per process. On HPU as Habana's YOLOX launcher (4 threads with 8 cards,
    12 otherwise: the host only feeds the cards); on CPU the cores are shared out so N processes
    on one machine do not oversubscribe them; CUDA keeps torch's default. An explicit
    OMP_NUM_THREADS wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    found = launch.detect()
    local_world_size = found.local_world_size if found.launcher else world_size
    kind = torch.device(device).type
    if kind == "hpu":
        threads = 4 if local_world_size == 8 else 12
    elif kind == "cpu" and local_world_size > 1:
        threads = max(1, (os.cpu_count() or 1) // local_world_size)
    else:
        return
    torch.set_num_threads(threads)
    logger.info(f"{threads} intra-op threads per process ({local_world_size} on this machine)")


def destroy():
    """Leave the process group together: a barrier first, so no rank tears its connections
    down while a peer still talks to it (seen as an abort at exit, SIGABRT, on a loaded host)."""
    global _flag_group
    watchdog.stop()
    if _active():
        dist.barrier()
        dist.destroy_process_group()
    _flag_group = None


def entry_command(main):
    """What torch.distributed.run must start to run the CLI whose entry function is ``main``
    again: ``[file]`` or ``["-m", module]``.

    Each rank repeats how this process was started, so it imports the same copy of the code: a
    script (tools/train.py in a checkout, which puts the checkout on sys.path; a console script;
    the module's own file) is rerun as that file, ``python -m pkg.mod`` as ``-m pkg.mod``.
    Anything else (an in-process caller such as a test) gets ``-m`` of ``main``'s module.
    """
    top = sys.modules.get("__main__")
    spec, path = getattr(top, "__spec__", None), getattr(top, "__file__", None)
    if main.__module__ == "__main__":                       # the CLI module is the program itself
        return ["-m", spec.name] if spec is not None else [os.path.abspath(path)]
    if spec is None and path and getattr(top, "main", None) is main:   # a wrapper script
        return [os.path.abspath(path)]
    return ["-m", main.__module__]


def launch_local(num_procs, script, argv, nnodes=1, node_rank=0):
    """Re-run ``script argv`` under torch.distributed.run with ``num_procs`` local processes
    (on machine ``node_rank`` of ``nnodes``, meeting at MASTER_ADDR:MASTER_PORT). ``script`` is a
    file, or the CLI's entry function, which is rerun as this process was started
    (``entry_command``), so it works from a checkout and from an installed copy alike.

    Returns (so the caller just carries on) when one process is asked for or when we already
    are one rank of a launch; otherwise this process is replaced and never returns.
    """
    if num_procs < 1:
        raise UserError(f"number of processes must be >= 1 (got {num_procs})")
    if num_procs * nnodes == 1 or launch.under_launcher():
        return
    found = launch.detect()
    if nnodes > 1:
        where = [f"--nnodes={nnodes}", f"--node_rank={node_rank}",
                 f"--master_addr={found.master_addr}", f"--master_port={found.master_port}"]
    else:
        where = ["--standalone"]
    target = entry_command(script) if callable(script) else [str(script)]
    cmd = [sys.executable, "-m", "torch.distributed.run", *where,
           f"--nproc_per_node={num_procs}", *target, *map(str, argv)]
    logger.info("relaunching: " + " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


_flag_group = None


def any_rank(flag):
    """True on every rank when ``flag`` is true on at least one (a preemption signal that reached
    some ranks only)."""
    return bool(max_over_ranks(int(bool(flag))))


def max_over_ranks(value):
    """The largest of every rank's integer ``value``, on every rank. A one-integer all-reduce on
    CPU through gloo (a side group when the training backend is nccl/hccl), so asking every step
    costs no device sync."""
    global _flag_group
    if not _active():
        return int(value)
    if _flag_group is None:
        _flag_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    vote = torch.tensor([int(value)])
    dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=_flag_group)
    return int(vote.item())


def restart_count(env=None):
    """How often torchrun (``--max-restarts``) has restarted this worker group: 0 on the first
    start and under any other launcher."""
    return launch.detect(env).restart_count


def restart_reason(env=None):
    """Why this run is a restart of an earlier one that must continue by itself: "torchrun
    restart N", "Slurm requeue N", or None for a first start."""
    found = launch.detect(env)
    if found.restart_count:
        return f"torchrun restart {found.restart_count}"
    if found.slurm_restart_count:
        return f"Slurm requeue {found.slurm_restart_count}"
    return None


def state_fingerprint(tensors):
    """A short hash of named tensors (names, dtypes, shapes, bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in tensors:
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


def log_rank_agreement(module, what="weights"):
    """Log whether every rank holds bit-identical parameters of ``module`` (one all-gather of a
    hash, at the end of a run), or name the ranks that drifted. Buffers (BN statistics) are not
    broadcast by DDP here, so they differ per rank until an evaluation averages them; said apart."""
    params = all_gather_object(state_fingerprint(module.named_parameters()))
    buffers = all_gather_object(state_fingerprint(module.named_buffers()))
    if len(set(params)) == 1:
        logger.info(f"{what}: parameters identical on all {len(params)} rank(s) (sha256 {params[0]}); "
                    f"buffers {'identical' if len(set(buffers)) == 1 else 'differ per rank'} "
                    f"(sha256 {buffers[0]} on rank 0)")
    else:
        logger.warning(f"{what}: parameters differ between ranks: "
                       + ", ".join(f"rank {r} {p}" for r, p in enumerate(params)))
    return params, buffers
