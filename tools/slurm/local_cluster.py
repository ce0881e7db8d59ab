"""A one-node Slurm cluster on this machine, for trying the sbatch scripts and for the tests.

    python tools/slurm/local_cluster.py start DIR     # prints: export SLURM_CONF=DIR/slurm.conf
    python tools/slurm/local_cluster.py stop DIR

Needs root and Debian's ``slurm-wlm`` and ``munge`` packages (``apt-get install slurm-wlm
munge``). Everything lives in DIR: a munge daemon on its own socket (with a copy of the
machine's munge key), slurmctld and slurmd on free ports, state, spool and logs. The daemons
run directly, without systemd or cgroups (``ProctrackType=proctrack/linuxproc``,
``TaskPlugin=task/none``); the node has this machine's CPU count and the name it answers to.
``JobRequeue=0``: a job is requeueable only when submitted with ``--requeue``, as on most
production clusters. Clients find the cluster through ``SLURM_CONF``.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
MUNGE_KEY = Path("/etc/munge/munge.key")


def missing():
    """Why this machine cannot run the cluster, or None."""
    if os.geteuid() != 0:
        return "needs root (the Slurm daemons run as root here)"
    absent = [d for d in (*DAEMONS, "sbatch", "srun", "scontrol") if shutil.which(d) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    if not MUNGE_KEY.is_file():
        return f"{MUNGE_KEY} missing (the munge package creates it)"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(folder, ctld_port, d_port, cpus, host):
    f = folder
    return f"""ClusterName=detkit
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={f}/munge/socket
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=0
KillWait=5
MinJobAge=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def start(folder, timeout=30):
    """Start munged, slurmctld and slurmd in ``folder``; returns the environment clients need.
    Raises RuntimeError (with the daemons' log tail) when the node does not come up."""
    why = missing()
    if why:
        raise RuntimeError(why)
    folder = Path(folder).resolve()
    stop(folder)
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "munge").chmod(0o700)
    key = folder / "munge" / "key"
    shutil.copyfile(MUNGE_KEY, key)
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(config(folder, _free_port(), _free_port(), os.cpu_count() or 1, host))
    env = dict(os.environ, SLURM_CONF=str(conf))
    m = folder / "munge"
    subprocess.run(["munged", "--force", f"--socket={m}/socket", f"--key-file={key}", f"--log-file={m}/log",
                    f"--pid-file={m}/pid", f"--seed-file={m}/seed"], check=True, env=env)
    subprocess.run(["slurmctld", "-c"], check=True, env=env)        # -c: a clean state
    subprocess.run(["slurmd"], check=True, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip()
        if state in ("idle", "mixed", "allocated"):
            return {"SLURM_CONF": str(conf)}
        time.sleep(0.3)
    logs = "".join(p.read_text(errors="replace")[-1500:] for p in (folder / "log").glob("*.log"))
    stop(folder)
    raise RuntimeError(f"the Slurm node did not come up within {timeout} s (state {state!r}):\n{logs}")


def stop(folder):
    """Stop the daemons started in ``folder`` (by their pid files), if any."""
    folder = Path(folder)
    for pidfile in (folder / "slurmd.pid", folder / "slurmctld.pid", folder / "munge" / "pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pidfile.unlink(missing_ok=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("start", "stop"))
    ap.add_argument("folder", help="where the cluster's config, state and logs live")
    args = ap.parse_args(argv)
    if args.action == "stop":
        stop(args.folder)
        return 0
    try:
        env = start(args.folder)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={env['SLURM_CONF']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
