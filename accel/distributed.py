"""Process groups for torchrun and mpirun alike; every helper is a no-op in a single process.

A process-group timeout bounds every collective, so a rank that dies makes the others fail
with an error instead of waiting forever.
"""
import inspect
import os
import re
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from loguru import logger

from accel import hpu
from accel.errors import UserError

DEFAULT_TIMEOUT_S = 1800
DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = "29500"
# (rank, local rank, world size) variable names per launcher, in lookup order.
_LAUNCHERS = (
    ("torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE"),
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
)


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def _env_int(name, env):
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def dist_env(env=None):
    """Rank / local rank / world size from whichever launcher started us (single process if none).

    A missing local rank (PMI launchers) falls back to the global rank: right on one node.
    """
    env = os.environ if env is None else env
    for launcher, rank_var, local_var, size_var in _LAUNCHERS:
        if rank_var in env and size_var in env:
            rank, size = _env_int(rank_var, env), _env_int(size_var, env)
            local = _env_int(local_var, env) if local_var in env else rank
            if size < 1 or not 0 <= rank < size:
                raise UserError(f"{launcher} environment is inconsistent: "
                                f"{rank_var}={rank} with {size_var}={size}")
            return DistInfo(rank, local, size)
    return DistInfo()


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
    """Join the process group described by the launcher's environment; no-op for one process.

    mpirun sets no MASTER_ADDR/MASTER_PORT, so single-node defaults are filled in (multi-node
    mpirun runs must export MASTER_ADDR themselves). RANK/LOCAL_RANK/WORLD_SIZE are exported
    too, so code that only knows torchrun's variables sees the same ranks.
    """
    info = dist_env()
    if info.world_size == 1 or _active():
        return info
    os.environ.setdefault("MASTER_ADDR", DEFAULT_MASTER_ADDR)
    os.environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
    os.environ.update(RANK=str(info.rank), LOCAL_RANK=str(info.local_rank),
                      WORLD_SIZE=str(info.world_size))
    backend = backend or backend_for(device)
    if backend == "hccl":
        hpu.register_hccl()
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, store=_attempt_store(info, timeout), rank=info.rank,
                            world_size=info.world_size, timeout=timeout)
    logger.info(f"rank {info.rank}/{info.world_size} (local {info.local_rank}) joined via "
                f"{backend} at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}")
    return info


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
    return dist.get_rank() if _active() else dist_env().rank


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
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE")
                           or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or world_size)
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
    if num_procs * nnodes == 1 or any(rank_var in os.environ for _, rank_var, _, _ in _LAUNCHERS):
        return
    if nnodes > 1:
        where = [f"--nnodes={nnodes}", f"--node_rank={node_rank}",
                 f"--master_addr={os.environ.get('MASTER_ADDR', DEFAULT_MASTER_ADDR)}",
                 f"--master_port={os.environ.get('MASTER_PORT', DEFAULT_MASTER_PORT)}"]
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
    some ranks only). The vote is a one-integer all-reduce on CPU through gloo (a side group when
    the training backend is nccl/hccl), so asking every step costs no device sync."""
    global _flag_group
    if not _active():
        return bool(flag)
    if _flag_group is None:
        _flag_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    vote = torch.tensor([int(bool(flag))])
    dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=_flag_group)
    return bool(vote.item())


def restart_count(env=None):
    """How often torchrun (``--max-restarts``) has restarted this worker group: 0 on the first
    start and under any other launcher."""
    env = os.environ if env is None else env
    return _env_int("TORCHELASTIC_RESTART_COUNT", env) if "TORCHELASTIC_RESTART_COUNT" in env else 0


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
