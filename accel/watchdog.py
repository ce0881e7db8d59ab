"""The hang watchdog: when the ranks of a run stop making progress, say which rank did not
arrive, where, and what it was doing, instead of letting the others wait for a generic
collective timeout (or forever).

How it works (every rank of a multi-process run, started by ``accel.init_distributed``):
- The training loop marks what it is doing with ``beat(phase, step)`` and ``tick()``: plain
  Python attribute writes (no lock, no host sync, no store round-trip), so the hot path pays
  nothing measurable (``bench/watchdog_cost.py``).
- A daemon thread publishes this rank's latest beat (host, pid, last completed step, phase,
  how long it has been in it) to the process group's key-value store every ``INTERVAL_S``
  seconds, over its own connection, and looks for an ``end`` record there.
- Rank 0 judges (rank 1 stands in while rank 0's heartbeat is stale, e.g. rank 0 is stopped
  under torchrun, whose agent hosts the store): when no rank has made progress for
  ``--dist-timeout`` seconds while at least one has started training, it names the ranks that
  did not arrive: those whose heartbeat stopped (stopped, died, or frozen), else those behind
  the others (still loading data while the others wait in the step's all-reduce).
- The verdict goes into the store as the ``end`` record; every live rank then writes the Python
  stacks of all its threads (``faulthandler``) to ``<log folder>/stacks_rank<R>.txt``, prints
  the same one line and exits 1.
- A rank that fails on its own (an exception in evaluation, a full disk while checkpointing)
  publishes its one-line cause the same way before it exits, so the other ranks end with that
  cause instead of a collective timeout; a rank whose collective fails (a peer died) reads the
  record or, without one, diagnoses as the judge does.

Bound: a change of beat reaches the judge within two intervals (the publishing thread's and the
judge's own); the verdict comes at the first poll at least ``--dist-timeout`` later, so within
``--dist-timeout + 3 * INTERVAL_S`` of the last progress; the other ranks read it within one
more interval and end at once (stack dump and print take well under a second). So every live
rank has written its stacks and its line within ``--dist-timeout + 5 s`` of the last progress
(the judge then waits up to ``2 * INTERVAL_S + 1`` s for the others to read it before it exits:
it may host the store). If rank 0 itself hosts the store (srun, mpirun) and is stopped, the
others give up after ``--dist-timeout`` seconds of store failures, each of which takes
``STORE_TIMEOUT_S``: within ``--dist-timeout + 12 s``. The
process group's own timeout is ``--dist-timeout + GRACE_S``, a backstop that fires only
if the watchdog could not act; NCCL would otherwise abort the process first, without a word.

``DETKIT_WATCHDOG=0`` turns it off (to measure its cost, or to debug the watchdog itself);
the process group timeout is then exactly ``--dist-timeout``.
"""
import faulthandler
import json
import os
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

INTERVAL_S = 1.0     # heartbeat and judging period: what a stopped rank's report may lag by
STORE_TIMEOUT_S = 10.0
GRACE_S = 30.0
STALE_AFTER_S = 2.5 * INTERVAL_S     # a heartbeat older than this: its thread is not running
ENV_SWITCH = "DETKIT_WATCHDOG"
# where a phase sits in one step's cycle, to tell who is behind at the same step count:
# after step N completes come its checkpoint/evaluation (0), then loading batch N+1 (1), then
# training step N+1 (2) until the step count becomes N+1
_ORDER = {"checkpoint": 0, "evaluation": 0, "data loading": 1, "training step": 2}
UNARMED = ("starting",)     # before the first beat: setup (cache loading) may take long


class _Beat:
    """What this rank is doing; written by the training loop, read by the watchdog thread."""
    phase = "starting"
    step = 0
    count = 0
    since = time.time()


_beat = _Beat()
_current = None          # the running Watchdog of this process


def beat(phase=None, step=None):
    """The training loop is now in ``phase`` (one of "data loading", "training step",
    "evaluation", "checkpoint") and/or has completed ``step`` steps. Costs two attribute
    writes: safe on the hot path."""
    b = _beat
    if phase is not None and phase != b.phase:
        b.phase, b.since = phase, time.time()
    if step is not None:
        b.step = step
    b.count += 1


def tick():
    """Progress inside a long phase (an evaluation batch)."""
    _beat.count += 1


class ticking:
    """``with ticking(model, "evaluation"):`` marks the phase and counts every forward of
    ``model`` as progress, so a long evaluation is not taken for a hang."""

    def __init__(self, model, phase="evaluation"):
        self.model, self.phase, self.handle = model, phase, None

    def __enter__(self):
        beat(self.phase)
        hook = getattr(self.model, "register_forward_pre_hook", None)
        if hook is not None:
            self.handle = hook(lambda *args: tick())
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
        return False


def enabled():
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "false", "no", "off")


def process_group_timeout(dist_timeout_s):
    """The process group's own timeout: a backstop behind the watchdog (see module docstring)."""
    return dist_timeout_s + GRACE_S if enabled() else dist_timeout_s


def current():
    return _current


def start(launch, hang_after_s, attempt):
    """Start this rank's watchdog (``accel.init_distributed`` calls it once the group is up)."""
    global _current
    if not enabled() or launch.world_size < 2:
        return None
    stop()
    from torch import distributed as dist

    _beat.phase, _beat.step, _beat.since = "starting", 0, time.time()

    client = dist.TCPStore(launch.master_addr, int(launch.master_port), is_master=False,
                           timeout=timedelta(seconds=STORE_TIMEOUT_S), wait_for_workers=False)
    store = dist.PrefixStore(f"detkit/watchdog/attempt_{attempt}", client)
    _current = Watchdog(store, launch.rank, launch.world_size, hang_after_s)
    _current.start()
    return _current


def stop():
    """Stop the watchdog before the group is torn down (a rank leaving must not look hung)."""
    global _current
    if _current is not None:
        _current.close()
    _current = None


def log_to(folder):
    """Where stack dumps go: the run's log folder (the trainers call this)."""
    Watchdog.log_dir = Path(folder)


def _proc_state(pid):
    """'stopped', 'dead' or 'running' for a process of this machine."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                code = line.split()[1]
                return {"T": "stopped", "t": "stopped", "Z": "dead", "X": "dead"}.get(code, "running")
    except OSError:
        return "dead"
    return "running"


class Watchdog:
    log_dir = None

    def __init__(self, store, rank, world_size, hang_after_s, interval_s=INTERVAL_S):
        import socket

        self.store, self.rank, self.world = store, rank, world_size
        self.hang_after, self.interval = float(hang_after_s), float(interval_s)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._stop = threading.Event()
        self._ending = threading.Lock()
        self._seq = 0
        self._seen = {}       # rank -> [record, seq changed at (monotonic), count changed at]
        self._store_ok = time.monotonic()
        self._lock = threading.Lock()      # the store client is used by one thread at a time
        self.thread = threading.Thread(target=self._run, name="detkit-watchdog", daemon=True)

    # ------------------------------------------------------------------ thread
    def start(self):
        self._publish()          # first heartbeat now: the judge sees every rank from the start
        self.thread.start()

    def close(self):
        self._stop.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=self.interval + STORE_TIMEOUT_S)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self._publish()
                record = self.read_end()
                if record is not None:
                    self.end(record)
                self._store_ok = time.monotonic()
                if self.rank == 0 or (self.rank == 1 and self._leader_stale()):
                    verdict = self.judge()
                    if verdict is not None:
                        self.end(self.publish_end("hang", verdict, 1))
            except Exception as exc:  # noqa: BLE001  the store host may be stopped or gone
                if self._stop.is_set():
                    return
                if time.monotonic() - self._store_ok > self.hang_after:
                    self.end({"kind": "hang", "code": 1, "line": self._store_lost_line(exc)})

    def _publish(self):
        b = _beat
        self._seq += 1
        record = {"rank": self.rank, "host": self.host, "pid": self.pid, "step": b.step,
                  "phase": b.phase, "age": round(time.time() - b.since, 1), "count": b.count,
                  "seq": self._seq}
        with self._lock:
            self.store.set(f"hb/{self.rank}", json.dumps(record))

    def _read(self, ranks):
        keys = [f"hb/{r}" for r in ranks]
        with self._lock:      # two round trips once every rank has published (one per key before)
            present = keys if self.store.check(keys) else [k for k in keys if self.store.check([k])]
            values = self.store.multi_get(present) if present else []
        return {json.loads(v)["rank"]: json.loads(v) for v in values}

    def _observe(self, records):
        """Note, on this machine's clock, when each rank's heartbeat and progress last changed."""
        now = time.monotonic()
        for r, rec in records.items():
            seen = self._seen.get(r)
            if seen is None:
                self._seen[r] = [rec, now, now]
                continue
            old = seen[0]
            if rec["seq"] != old["seq"]:
                seen[1] = now
            if rec["count"] != old["count"] or rec["step"] != old["step"] or rec["phase"] != old["phase"]:
                seen[2] = now
            seen[0] = rec

    def _leader_stale(self):
        self._observe(self._read([0]))
        seen = self._seen.get(0)
        return seen is not None and time.monotonic() - seen[1] > STALE_AFTER_S

    def judge(self):
        """The one-line verdict when no rank progressed for ``hang_after`` s, else None."""
        self._observe(self._read(range(self.world)))
        if len(self._seen) < self.world:
            return None
        now = time.monotonic()
        records = {r: s[0] for r, s in self._seen.items()}
        if all(rec["phase"] in UNARMED for rec in records.values()):
            return None
        quiet = now - max(s[2] for s in self._seen.values())
        if quiet < self.hang_after:
            return None
        return self.describe(f"no rank progressed for {quiet:.0f} s (--dist-timeout {self.hang_after:g} s)")

    def describe(self, why):
        """'rank R (host H, pid P) did not arrive: STATE, last completed step N, in PHASE for S s'
        for the ranks that stopped or fell behind, with ``why`` and where the stacks are."""
        now = time.monotonic()
        stale = {r for r, s in self._seen.items() if now - s[1] > STALE_AFTER_S and r != self.rank}
        culprits = sorted(stale)
        if not culprits:
            position = {r: (s[0]["step"], _ORDER.get(s[0]["phase"], 0)) for r, s in self._seen.items()}
            lowest = min(position.values())
            culprits = sorted(r for r, p in position.items() if p == lowest)
            if len(culprits) == len(position):
                states = "; ".join(self._state(r, now, stale) for r in culprits)
                return (f"error: no rank is behind the others ({states}): a collective that not every "
                        f"rank calls, or one step longer than --dist-timeout; {why}; {self._stacks()}")
        named = "; ".join(self._state(r, now, stale) for r in culprits)
        return f"error: {named}; {why}; {self._stacks()}"

    def _state(self, r, now, stale):
        rec, seen = self._seen[r][0], self._seen[r]
        if r in stale:
            if rec["host"] == self.host:
                how = {"stopped": "stopped (SIGSTOP or a debugger)", "dead": "died (its process is gone)",
                       "running": "alive but its heartbeat stopped"}[_proc_state(rec["pid"])]
            else:
                how = f"no heartbeat for {now - seen[1]:.0f} s (died, stopped or its host is unreachable)"
            verb = "did not arrive"
        else:
            how, verb = "alive", "did not arrive"
        age = rec["age"] + (now - seen[1])
        return (f"rank {r} (host {rec['host']}, pid {rec['pid']}) {verb}: {how}, last completed step "
                f"{rec['step']}, in {rec['phase']} for {age:.0f} s")

    def _stacks(self):
        return f"Python stacks of the live ranks in {self._stack_dir()}/stacks_rank*.txt"

    def _stack_dir(self):
        return Path(self.log_dir) if self.log_dir is not None else Path(tempfile.gettempdir())

    def _store_lost_line(self, exc):
        seen = self._seen.get(0)
        where = (f"host {seen[0]['host']}, pid {seen[0]['pid']}, last completed step {seen[0]['step']}, "
                 f"in {seen[0]['phase']}") if seen else "its host"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return (f"error: rank 0 ({where}) did not arrive: the store it hosts has not answered for "
                f"{time.monotonic() - self._store_ok:.0f} s (stopped, died or unreachable: {first}); "
                f"{self._stacks()}")

    # ------------------------------------------------------------------ the end
    def read_end(self):
        with self._lock:
            if not self.store.check(["end"]):
                return None
            return json.loads(self.store.get("end"))

    def publish_end(self, kind, line, code):
        """Offer the run's end record; the first rank's wins and is returned."""
        record = json.dumps({"kind": kind, "line": line, "code": code, "rank": self.rank})
        with self._lock:
            won = self.store.compare_set("end", "", record)
        return json.loads(won)

    def diagnose(self, reason):
        """For a rank whose collective failed: the run's end record, made here if no rank made one
        yet (a heartbeat that stops within ``STALE_AFTER_S`` names the dead or stopped rank)."""
        record = self.read_end()
        if record is not None:
            return record
        self._observe(self._read(range(self.world)))
        deadline = time.monotonic() + STALE_AFTER_S + self.interval
        while time.monotonic() < deadline:
            now = time.monotonic()
            if any(now - s[1] > STALE_AFTER_S and r != self.rank for r, s in self._seen.items()):
                break
            if any(r != self.rank and s[0]["host"] == self.host and _proc_state(s[0]["pid"]) != "running"
                   for r, s in self._seen.items()):
                for r, s in self._seen.items():
                    if s[0]["host"] == self.host and _proc_state(s[0]["pid"]) != "running":
                        s[1] = -1e9          # its process is gone or stopped: stale now
                break
            time.sleep(self.interval / 4)
            self._observe(self._read(range(self.world)))
            record = self.read_end()
            if record is not None:
                return record
        line = self.describe(f"a collective failed: {reason}")
        return self.publish_end("hang", line, 1)

    def end(self, record, exit=True):
        """Write the stacks (for a hang), print the record's line, let the others read it, exit."""
        if record.get("kind") == "failure" and record.get("rank") == self.rank and exit:
            return          # this rank's own failure: its main thread prints the line and exits
        if not self._ending.acquire(blocking=False):
            threading.Event().wait()      # another thread of this process is ending it already
        self._stop.set()
        if record["kind"] == "hang":
            self.dump_stacks(record["line"])
        if record.get("rank") != self.rank:
            try:
                with self._lock:
                    self.store.add("acks", 1)
            except Exception:  # noqa: BLE001
                pass
        print(record["line"], file=sys.stderr, flush=True)
        if record.get("rank") == self.rank:
            self.wait_for_acks()
        sys.stdout.flush()
        if exit:
            os._exit(record["code"])

    def wait_for_acks(self):
        """The publisher may host the store: stay until every other rank has read the record,
        or ``2 * INTERVAL_S + 1`` s (a stopped rank never reads it)."""
        deadline = time.monotonic() + 2 * self.interval + 1
        while time.monotonic() < deadline:
            try:
                with self._lock:
                    if self.store.add("acks", 0) >= self.world - 1 - len(self._stale_now()):
                        return
            except Exception:  # noqa: BLE001
                return
            time.sleep(0.1)

    def _stale_now(self):
        now = time.monotonic()
        return [r for r, s in self._seen.items() if now - s[1] > STALE_AFTER_S and r != self.rank]

    def dump_stacks(self, line):
        folder = self._stack_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"stacks_rank{self.rank}.txt", "w") as f:
                f.write(f"{line}\nrank {self.rank}, host {self.host}, pid {self.pid}, last completed step "
                        f"{_beat.step}, in {_beat.phase}\n\n")
                f.flush()
                faulthandler.dump_traceback(f, all_threads=True)
        except OSError as exc:
            print(f"watchdog: cannot write stacks to {folder}: {exc}", file=sys.stderr, flush=True)


def end_run(line, code):
    """A rank that fails on its own (``accel.errors.cli_entry``): publish its one-line cause for
    the others and wait until they have read it. Returns quietly without a watchdog."""
    wd = _current
    if wd is None:
        return
    try:
        wd._stop.set()           # this rank ends by its own line, not by the record
        cause = (f"error: rank {wd.rank} (host {wd.host}, pid {wd.pid}) failed in {_beat.phase} after "
                 f"step {_beat.step}: {line.removeprefix('error: ')}")
        record = wd.publish_end("failure", cause, code)
        if record.get("rank") == wd.rank:
            wd.wait_for_acks()
    except Exception:  # noqa: BLE001  the store may be gone already
        pass


def collective_failed(reason):
    """The one line (and exit code) for a rank whose collective failed, or None without a
    watchdog: the run's end record, or this rank's own diagnosis."""
    wd = _current
    if wd is None:
        return None
    try:
        record = wd.diagnose(reason)
    except Exception:  # noqa: BLE001  the store host is gone too
        return None
    wd.end(record, exit=False)
    return record["line"], record["code"]
