"""Slurm: launch detection, host lists, the requeue decision, and a real one-node Slurm on this
host (tools/slurm/local_cluster.py; needs root and Debian's slurm-wlm + munge):

- ``srun -n 2`` runs of YOLOX-nano and SSD form their process group from Slurm's variables alone
  and end with the weights of the 2-process torchrun run (tests/conftest.py, same seed);
- the shipped ``tools/slurm/yolox.sbatch`` (``--signal=USR1@90 --requeue``) gets ``scancel
  --signal=USR1`` mid-epoch, checkpoints, requeues itself, resumes by itself and ends bit-equal.
"""
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from accel import launch, preemption
from accel.errors import UserError
from yolox_tools import ROOT, load_tool

drill = load_tool("fault_drill")
cluster_tool = load_tool("slurm/local_cluster")

SRUN_ENV = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "4",
            "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-08],login1",
            "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_NODEID": "1", "SLURM_NTASKS": "4"}


# ---------------------------------------------------------------- no cluster needed
def test_srun_step_gives_ranks_and_rendezvous():
    found = launch.detect(SRUN_ENV)
    assert (found.launcher, found.rank, found.local_rank, found.world_size, found.local_world_size) == \
        ("Slurm", 3, 1, 4, 2)
    assert (found.master_addr, found.master_port) == ("gpu07", 15000 + 4242)


def test_sbatch_script_itself_is_one_process():
    """The batch step has SLURM_PROCID=0 and SLURM_NTASKS=N but no step of N tasks: python run
    there directly (no srun) must not wait for N-1 peers that never come."""
    batch = {k: v for k, v in SRUN_ENV.items() if not k.startswith("SLURM_STEP")}
    found = launch.detect(dict(batch, SLURM_PROCID="0"))
    assert (found.launcher, found.world_size) == (None, 1)
    assert found.slurm_job_id == "4242"


@pytest.mark.parametrize("extra,expected", [
    # torchrun started by srun (one agent per node): torchrun's variables describe the workers
    ({"RANK": "5", "LOCAL_RANK": "5", "WORLD_SIZE": "16", "MASTER_ADDR": "head", "MASTER_PORT": "29400"},
     ("torchrun", 5, 5, 16, "head", 29400)),
    # mpirun inside an allocation: Open MPI's ranks, not those of the step that started orted
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_SIZE": "8"},
     ("Open MPI", 2, 0, 8, "gpu07", 19242)),
    # srun --mpi=pmi2 sets PMI_* without a local rank: Slurm's local id of the same step
    ({"PMI_RANK": "3", "PMI_SIZE": "4"}, ("PMI", 3, 1, 4, "gpu07", 19242)),
    # an explicit rendezvous wins over the one derived from Slurm
    ({"MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "23456"}, ("Slurm", 3, 1, 4, "10.0.0.9", 23456)),
])
def test_launcher_order(extra, expected):
    found = launch.detect(dict(SRUN_ENV, **extra))
    assert (found.launcher, found.rank, found.local_rank, found.world_size,
            found.master_addr, found.master_port) == expected


@pytest.mark.parametrize("text,hosts", [
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("vm", ["vm"]),
    ("a[1-2]-ib[3,5],login", ["a1-ib3", "a1-ib5", "a2-ib3", "a2-ib5", "login"]),
    ("gpu[098-101]", ["gpu098", "gpu099", "gpu100", "gpu101"]),
    ("n[9],m[10-11]", ["n9", "m10", "m11"]),
])
def test_expand_hostlist(text, hosts):
    assert launch.expand_hostlist(text) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node[3-1]", "node[a-b]", ""])
def test_bad_hostlist_is_one_line(bad):
    with pytest.raises(UserError, match="Slurm host list"):
        launch.expand_hostlist(bad)


def test_tasks_per_node():
    assert launch.tasks_per_node("2(x3),1") == [2, 2, 2, 1]


def fake_scontrol(show, requeue_rc=0):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        out = show if cmd[1] == "show" else ""
        return SimpleNamespace(returncode=requeue_rc if cmd[1] == "requeue" else 0, stdout=out, stderr="")

    return run, calls


@pytest.mark.parametrize("show,requeued", [
    ("JobId=7 JobName=yolox Requeue=1 Restarts=0 BatchFlag=1", True),
    ("JobId=7 JobName=yolox Requeue=0 Restarts=0 BatchFlag=1", False),    # no --requeue
    ("JobId=7 JobName=bash Requeue=1 Restarts=0 BatchFlag=0", False),     # salloc / srun alone
])
def test_requeue_only_a_requeueable_batch_job(show, requeued, monkeypatch):
    monkeypatch.setattr(preemption.shutil, "which", lambda name: "/usr/bin/" + name)
    run, calls = fake_scontrol(show)
    note = preemption.requeue("7", run=run)
    assert (["scontrol", "requeue", "7"] in calls) == requeued
    assert ("requeued: it resumes by itself" in note) == requeued
    if not requeued:
        assert "not requeued" in note and "submit it again" in note


@pytest.mark.parametrize("signum,requeues", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_only_sigusr1_requeues(signum, requeues, monkeypatch):
    """SIGTERM is also scancel's cancel: requeueing then would undo it (today's behaviour stays)."""
    asked = []
    monkeypatch.setattr(preemption, "requeue", lambda job: asked.append(job) or "; requeued")
    monkeypatch.setattr(preemption, "destroy", lambda: None)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        preemption._agreed[0] = signum
        assert preemption.end_preempted() == ("; requeued" if requeues else "")
        assert asked == (["7"] if requeues else [])
        assert preemption.end_preempted() == ""          # once per signal
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- a real Slurm
def _slurm_missing():
    why = cluster_tool.missing()
    if why and os.geteuid() == 0 and os.environ.get("CI"):
        pytest.fail(f"Slurm: {why}; CI runs as root and must install it (.ci/run does)")
    return why


LAUNCHER_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                 "GROUP_RANK", "TORCHELASTIC_RESTART_COUNT")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _slurm_missing()
    if why:
        pytest.skip(f"no one-node Slurm here: {why}")
    folder = tmp_path_factory.mktemp("slurm")
    env = cluster_tool.start(folder)
    # what the jobs inherit: this process's environment less any launcher's variables (another
    # test's leftovers would outrank Slurm's in accel.launch, e.g. a MASTER_ADDR nobody serves)
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS
             and not k.startswith(("OMPI_", "PMI_", "PMIX_", "SLURM_"))}
    yield dict(clean, OMP_NUM_THREADS="1", **env)
    cluster_tool.stop(folder)


def slurm(cmd, env, **kwargs):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True, **kwargs).stdout


def test_hostlist_expansion_agrees_with_scontrol(cluster):
    text = "node[01-03,07],a[1-2]-ib[3,5],gpu[098-101]"
    assert launch.expand_hostlist(text) == slurm(["scontrol", "show", "hostnames", text], cluster).split()


@pytest.mark.parametrize("model", ["yolox", "ssd"])
def test_srun_two_tasks_train_as_torchrun_does(model, cluster, drill_data, torchrun_reference, tmp_path):
    """srun -n 2 with no torchrun and no rank flags: the ranks come from Slurm, the weights, EMA
    and optimizer state equal the 2-process torchrun run's."""
    reference = torchrun_reference(model)
    script = drill.script_args(model, drill_data[model], tmp_path, 2)
    proc = subprocess.run(["srun", "-n", "2", "-c", "1", sys.executable, *script], cwd=ROOT, env=cluster,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert len(re.findall(r"rank [01]/2 \(local [01]\) joined via gloo at \S+:1\d{4} \(launcher: Slurm\)", log)) == 2
    equal, count, first = drill.compare(model, reference / "reference", tmp_path)
    print(f"srun -n 2 {model}: " + " / ".join(re.findall(r"rank \d/2 .*launcher: Slurm\)", log))
          + f"; vs torchrun: {count} tensors, equal={equal}")
    assert equal and count > 100, first


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def job_fields(job, env):
    shown = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", shown.stdout))


def test_sbatch_usr1_checkpoints_requeues_and_resumes_bit_equal(cluster, drill_data, torchrun_reference, tmp_path):
    """The shipped tools/slurm/yolox.sbatch, 2 tasks on CPU: ``scancel --signal=USR1`` (what
    ``--signal=USR1@90`` sends before the time limit) once a checkpoint of epoch 1 exists;
    the job writes a preemption checkpoint, rank 0 requeues it, the requeued job resumes from
    that checkpoint by itself and its final weights, EMA and optimizer state equal the
    uninterrupted torchrun run's."""
    reference = torchrun_reference("yolox")
    script = drill.script_args("yolox", drill_data["yolox"], tmp_path, 2)
    log = tmp_path / "job.log"
    job = slurm(["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "-o", str(log),
                 "--export=ALL,DEVICE=cpu", str(ROOT / "tools" / "slurm" / "yolox.sbatch"), *script[1:]],
                cluster, cwd=ROOT).strip()
    try:
        first = tmp_path / "yolox_nano_shapes" / "iter_00000002_ckpt.pth"
        wait_for(first.exists, 180, f"{first} ({log.read_text(errors='replace')[-2000:] if log.exists() else ''})")
        slurm(["scancel", "--signal=USR1", job], cluster)
        # Slurm holds a requeued job until 2 minutes after the requeue (its BeginTime, fixed by
        # slurmctld); the scheduler's hold is not under test: release it once the job waits
        fields = wait_for(lambda: (f := job_fields(job, cluster)).get("Restarts") == "1"
                          and f.get("JobState") == "PENDING" and f, 120, "the requeue")
        assert fields["Requeue"] == "1"
        slurm(["scontrol", "update", f"JobId={job}", "StartTime=now"], cluster)
        wait_for(lambda: job_fields(job, cluster).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"),
                 240, "the requeued job to finish")
    finally:
        subprocess.run(["scancel", job], env=cluster, capture_output=True)
    text = log.read_text(errors="replace")
    assert job_fields(job, cluster)["JobState"] == "COMPLETED", text[-3000:]
    preempted = [ln for ln in text.splitlines() if ln.startswith("preempted: SIGUSR1 at epoch 1, iteration ")]
    assert len(preempted) == 2 and any(f"Slurm job {job} requeued" in ln for ln in preempted), preempted
    iteration = int(re.search(r"iteration (\d+)", preempted[0]).group(1))
    resumed = re.findall(r"resuming by itself from (\S+) \(Slurm requeue 1\)", text)
    assert resumed == [str(tmp_path / "yolox_nano_shapes" / f"iter_{iteration:08d}_ckpt.pth")], text[-3000:]
    assert text.count("training done") == 1
    equal, count, first_diff = drill.compare("yolox", reference / "reference", tmp_path)
    print("\n".join(["sbatch job " + job, *preempted, *re.findall(r".*resuming by itself from .*", text),
                      f"final checkpoint vs torchrun: {count} tensors, equal={equal}"]))
    assert equal and count > 100, first_diff
