"""Run by the distributed tests under torchrun / mpirun / plain env: checks real gloo collectives.

Usage: ``dist_check.py MODE TIMEOUT_S [READY_DIR]``. Modes: ``collectives`` (all-reduce, gather,
broadcast, one DDP step), ``restart`` (under ``torchrun --max-restarts 1``: the collectives,
then rank 1 dies by SIGKILL; in the restarted group rank 0 arrives 5 s late, as on a loaded host),
``stall`` (rank 1 never joins a collective; rank 0 must fail within
the process-group timeout instead of hanging; run with the watchdog off) or ``stall_cli`` (the
same through ``cli_entry``, watchdog on: rank 1 is stuck "loading data" while rank 0 waits in the
step's all-reduce, and the watchdog names rank 1; stacks go to READY_DIR) or ``die_cli`` (rank 1
is SIGKILLed in its training step, as by the OOM killer; rank 0's all-reduce fails at once and
its one line must name rank 1 as dead).
"""
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

import accel  # noqa: E402
from accel import watchdog  # noqa: E402


def collectives(info):
    r, n = info.rank, info.world_size
    # mean over ranks of (r+1) * [1, 10]: for n ranks, (n+1)/2 * [1, 10]
    mean = accel.all_reduce_mean(torch.tensor([1.0, 10.0]) * (r + 1))
    expect = torch.tensor([1.0, 10.0]) * (n + 1) / 2
    assert torch.allclose(mean, expect), (mean, expect)
    gathered = accel.all_gather_object({"rank": r, "local": info.local_rank})
    assert [g["rank"] for g in gathered] == list(range(n)), gathered
    assert accel.broadcast_object(f"from {r}") == "from 0"
    # One DDP step of w -> w - lr * mean_r(x_r) with x_r = r + 1: every rank ends identical.
    torch.manual_seed(0)
    model = accel.wrap_ddp(torch.nn.Linear(1, 1, bias=False), torch.device("cpu"))
    w0 = accel.unwrap(model).weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    precision = accel.Precision(torch.device("cpu"))
    loss = model(torch.full((1, 1), float(r + 1))).sum()
    precision.backward_and_step(loss, opt)
    w1 = accel.unwrap(model).weight.detach()
    assert torch.allclose(w1, w0 - 0.5 * (n + 1) / 2), (w0, w1)
    weights = accel.all_gather_object(w1.item())
    assert len(set(weights)) == 1, weights
    accel.barrier()
    line = (f"OK rank={r} local={info.local_rank} world={n} main={accel.is_main_process()} "
            f"mean={mean.tolist()} master={os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}\n")
    os.write(1, line.encode())  # one write(2) per line: ranks share the pipe and must not interleave


def restart(info):
    collectives(info)
    if accel.restart_count() == 0 and info.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    os.write(1, f"JOINED attempt {accel.restart_count()} rank {info.rank}\n".encode())


def stall(info):
    if info.rank != 0:
        time.sleep(30)
        return
    start = time.monotonic()
    try:
        accel.all_reduce_mean(torch.ones(1))
    except RuntimeError as exc:
        print(f"TIMEOUT after {time.monotonic() - start:.1f}s: {type(exc).__name__}", flush=True)
        os._exit(3)
    print("NO TIMEOUT", flush=True)


@accel.cli_entry
def stall_cli(info):
    """As ``stall``, but the failure reaches the CLI wrapper every entry point uses, with the
    phases a trainer marks: rank 1 never gets its batch, rank 0 waits in the step's all-reduce."""
    watchdog.beat("data loading", step=4)
    if info.rank != 0:
        time.sleep(30)
        return
    watchdog.beat("training step")
    accel.all_reduce_mean(torch.ones(1))


@accel.cli_entry
def die_cli(info):
    watchdog.beat("training step", step=6)
    if info.rank != 0:
        time.sleep(2)              # a heartbeat (every 1 s) has published the phase; rank 0 waits
        os.kill(os.getpid(), signal.SIGKILL)
    accel.all_reduce_mean(torch.ones(1))


def wait_for_peers(ready_dir, rank, world_size):
    """Line both processes up after their slow imports, so the short timeout only meets the stall."""
    Path(ready_dir, f"ready{rank}").touch()
    while len(list(Path(ready_dir).glob("ready*"))) < world_size:
        time.sleep(0.05)


def main():
    mode, timeout_s = sys.argv[1], float(sys.argv[2])
    if len(sys.argv) > 3:
        env = accel.dist_env()
        wait_for_peers(sys.argv[3], env.rank, env.world_size)
        watchdog.log_to(sys.argv[3])
    if mode == "restart" and accel.restart_count() == 1 and accel.dist_env().rank == 0:
        time.sleep(5)  # the peer reads the store first: stale keys of attempt 0 would misroute it
    info = accel.init_distributed(torch.device("cpu"), timeout_s=timeout_s)
    assert info.world_size == 2 and torch.distributed.get_backend() == "gloo"
    {"collectives": collectives, "restart": restart, "stall": stall, "stall_cli": stall_cli,
     "die_cli": die_cli}[mode](info)
    accel.destroy()


if __name__ == "__main__":
    main()
