"""Which launcher started this process, read in one place: torchrun, mpirun (Open MPI), an
MPI launcher that speaks PMI (MPICH / Intel MPI hydra), Slurm's srun, or none.

``detect()`` yields the rank, local rank, world size, processes on this machine and the
rendezvous address; nothing else in the project reads the launchers' variables.

Order, first match wins:
- ranks: torchrun (``RANK``/``WORLD_SIZE``), Open MPI (``OMPI_COMM_WORLD_*``), PMI (``PMI_RANK``
  /``PMI_SIZE``), a Slurm job step (``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``, srun only: an
  ``sbatch`` script itself is one process although its ``SLURM_NTASKS`` says otherwise),
  else one process. torchrun and mpirun go first because they are often started *by* srun (one
  agent per node), and their workers inherit the step's Slurm variables, which then describe
  the agents, not the workers.
- address: ``--dist-url`` (the YOLOX flag, exported as ``MASTER_ADDR``/``MASTER_PORT`` by
  ``accel.distributed.set_rendezvous``), else ``MASTER_ADDR``/``MASTER_PORT`` from the
  environment (torchrun sets them), else, under Slurm, the first host of the step's node list
  and a port derived from the job id, else ``127.0.0.1:29500`` (one machine).
"""
import os
import re
from dataclasses import dataclass
from itertools import product

from accel.errors import UserError

DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500
# Slurm port: SLURM_PORT_BASE + job id modulo SLURM_PORT_SPAN, below Linux's ephemeral range
# (32768-60999) so it never meets a port the kernel handed to some client.
SLURM_PORT_BASE, SLURM_PORT_SPAN = 15000, 15000

# (launcher, rank, local rank, world size, processes on this machine) variable names
_LAUNCHERS = (
    ("torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"),
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PMI", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", "MPI_LOCALNRANKS"),
    ("Slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS", None),
)


@dataclass(frozen=True)
class Launch:
    """What the launcher says about this process. ``launcher`` is None for a plain process."""
    launcher: str = None
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str = DEFAULT_MASTER_ADDR
    master_port: int = DEFAULT_MASTER_PORT
    slurm_job_id: str = None       # set inside any Slurm job (srun step or batch script)
    restart_count: int = 0         # torchrun --max-restarts round
    slurm_restart_count: int = 0   # times Slurm requeued the job


def _int(env, name):
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def detect(env=None):
    """The ``Launch`` of this process (see the module docstring for the order)."""
    env = os.environ if env is None else env
    common = dict(slurm_job_id=_slurm_job(env),
                  restart_count=_int(env, "TORCHELASTIC_RESTART_COUNT") if "TORCHELASTIC_RESTART_COUNT" in env else 0,
                  slurm_restart_count=_int(env, "SLURM_RESTART_COUNT") if "SLURM_RESTART_COUNT" in env else 0)
    for launcher, rank_var, local_var, size_var, local_size_var in _LAUNCHERS:
        if rank_var not in env or size_var not in env:
            continue
        rank, size = _int(env, rank_var), _int(env, size_var)
        if size < 1 or not 0 <= rank < size:
            raise UserError(f"{launcher} environment is inconsistent: {rank_var}={rank} with {size_var}={size}")
        if local_var in env:
            local = _int(env, local_var)
        elif launcher == "PMI" and _same_slurm_step(env, rank, size):
            local = _int(env, "SLURM_LOCALID")      # srun --mpi=pmi2 sets PMI_* without a local rank
        else:
            local = rank                            # no local rank given: one machine assumed
        local_size = _local_size(env, launcher, local_size_var, size)
        addr, port = _address(env)
        return Launch(launcher, rank, local, size, local_size, addr, port, **common)
    addr, port = _address(env)
    return Launch(None, master_addr=addr, master_port=port, **common)


def _slurm_job(env):
    """The Slurm job id (its current and its older variable name), None outside a job."""
    return env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")


def _same_slurm_step(env, rank, size):
    return ("SLURM_LOCALID" in env and env.get("SLURM_PROCID") == str(rank)
            and env.get("SLURM_STEP_NUM_TASKS") == str(size))


def _local_size(env, launcher, var, size):
    """Processes of this job on this machine (threads per process are shared out by it)."""
    if var and var in env:
        return _int(env, var)
    if launcher in ("Slurm", "PMI") and "SLURM_STEP_TASKS_PER_NODE" in env and "SLURM_NODEID" in env:
        counts = tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"])
        node = _int(env, "SLURM_NODEID")
        if 0 <= node < len(counts):
            return counts[node]
    return size


def _address(env):
    """(MASTER_ADDR, MASTER_PORT) by the order in the module docstring."""
    slurm = "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    addr = env.get("MASTER_ADDR") or (expand_hostlist(nodes)[0] if slurm and nodes else DEFAULT_MASTER_ADDR)
    job = _slurm_job(env)
    if env.get("MASTER_PORT"):
        port = _int(env, "MASTER_PORT")
    elif slurm and job:
        port = slurm_port(job)
    else:
        port = DEFAULT_MASTER_PORT
    return addr, port


def slurm_port(job_id):
    """The rendezvous port of a Slurm job: every task of the step computes the same one, and
    jobs sharing a node get different ones (unless their ids are SLURM_PORT_SPAN apart)."""
    try:
        return SLURM_PORT_BASE + int(job_id) % SLURM_PORT_SPAN
    except ValueError:
        raise UserError(f"environment variable SLURM_JOB_ID={job_id!r} is not an integer") from None


def expand_hostlist(text):
    """Slurm's compressed host list -> host names, in order: ``node[01-03,07]`` ->
    node01 node02 node03 node07; ``a[1-2]-ib[3,5],login`` -> a1-ib3 a1-ib5 a2-ib3 a2-ib5 login.
    Zero padding follows the range's first bound, as Slurm does. Written here (not
    ``scontrol show hostnames``) so that no Slurm client is needed on the compute nodes and the
    start costs no subprocess."""
    hosts = []
    for item in _split_top(text.strip(), ","):
        if not item:
            continue
        parts = re.split(r"(\[[^\]]*\])", item)
        choices = []
        for part in parts:
            if part.startswith("["):
                if not part.endswith("]"):
                    raise UserError(f"Slurm host list {text!r}: unbalanced brackets")
                choices.append(_expand_range(part[1:-1], text))
            elif "[" in part or "]" in part:
                raise UserError(f"Slurm host list {text!r}: unbalanced brackets")
            else:
                choices.append([part])
        hosts.extend("".join(combo) for combo in product(*choices))
    if not hosts:
        raise UserError(f"Slurm host list {text!r} names no host")
    return hosts


def _split_top(text, sep):
    """Split on ``sep`` outside brackets."""
    out, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    out.append(current)
    return out


def _expand_range(spec, text):
    values = []
    for piece in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", piece.strip())
        if not match:
            raise UserError(f"Slurm host list {text!r}: cannot read the range {piece!r}")
        lo, hi = match.group(1), match.group(2) or match.group(1)
        width = len(lo)
        if int(hi) < int(lo):
            raise UserError(f"Slurm host list {text!r}: range {piece!r} runs backwards")
        values.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
    return values


def tasks_per_node(text):
    """Slurm's ``SLURM_STEP_TASKS_PER_NODE`` (``2(x3),1``) -> [2, 2, 2, 1]."""
    counts = []
    for item in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if not match:
            raise UserError(f"SLURM_STEP_TASKS_PER_NODE={text!r}: cannot read {item!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def under_launcher(env=None):
    """Whether some launcher (torchrun, mpirun, PMI, srun) started this process: any of their
    rank variables is set (also one that ``detect`` would refuse as incomplete)."""
    env = os.environ if env is None else env
    return any(rank_var in env for _, rank_var, _, _, _ in _LAUNCHERS[:3]) or "SLURM_STEP_NUM_TASKS" in env

