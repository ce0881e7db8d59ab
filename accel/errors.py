"""User-facing errors: one line naming the file or flag and what was expected, never a traceback.

Also the one-line ends of a run the user did not ask for: Ctrl-C (exit 130, saying where the
run stopped and which checkpoint holds it), a preemption signal (exit 143, see
accel.preemption), a failure inside a data-loader worker (the root cause, not torch's re-raised
worker traceback) and, in a multi-process run, a rank that failed, stopped or died: every rank
ends with the same line naming it (accel.watchdog).

This module imports nothing of torch (the onnxruntime demo uses it without torch). The code
that knows process groups and signals registers how a run ends (``on_end``) when it starts, so
the dependency points from accel.distributed and accel.preemption to here and never back.
"""
import argparse
import functools
import os
import re
import sys

_hard_exit = os._exit   # module-level so a test can observe it without ending the test process
_where = []   # callables a running trainer registers: "epoch E, iteration I; latest checkpoint P"
# how a run ends, registered by the code that knows: "preempted" () -> text to add to the line
# (accel.preemption), "failed" (line, code) and "collective_failed" (reason) -> (line, code) or
# None (accel.distributed, for a multi-process run)
_ends = {}
# how gloo's plain RuntimeErrors say a peer timed out or went away
_PEER_GONE = re.compile(r"[Tt]imed out|Connection (closed|reset)|[Bb]roken pipe|peer")


class ArgParser(argparse.ArgumentParser):
    """argparse whose mistakes are one ``error:`` line naming the tool and exit code 2 (through
    ``cli_entry``), instead of argparse's usage block and ``sys.exit`` from inside parsing. Every
    command line of the project builds its parser from this class. ``name_tool=False`` leaves the
    tool's name out of the line, as the data tools (check, convert, make_shapes) have always
    printed their errors."""

    def __init__(self, *args, name_tool=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.name_tool = name_tool

    def error(self, message):
        raise UserError(f"{self.prog}: {message}" if self.name_tool else message)


class UserError(Exception):
    """A mistake in the user's input (flag, file, data). Its message is shown as-is, on one line."""


PREEMPTED_EXIT_CODE = 143     # 128 + SIGTERM, what a scheduler expects of a job it stopped


class Preempted(Exception):
    """A run stopped on a preemption signal after writing its checkpoint (accel.preemption);
    the message says where and how to continue."""


def report_position(describe):
    """Register ``describe()`` -> text saying where the run is; used when it is interrupted."""
    _where[:] = [describe]


def on_end(**handlers):
    """Register end-of-run handlers (see ``_ends``)."""
    _ends.update(handlers)


def _root_cause(text):
    """The last line of a re-raised worker traceback: ``ExcType: message``."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


def _is_collective_failure(exc):
    """A torch.distributed error, or (gloo raises plain RuntimeErrors) a RuntimeError about a
    peer timing out or going away while a process group is up."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    kinds = tuple(k for k in (getattr(dist, "DistError", None), getattr(dist, "DistBackendError", None)) if k)
    if kinds and isinstance(exc, kinds):
        return True
    group_up = dist is not None and dist.is_available() and dist.is_initialized()
    return group_up and isinstance(exc, RuntimeError) and bool(_PEER_GONE.search(str(exc)))


def one_line(text):
    return " ".join(str(text).split())


def cli_entry(main):
    """Wrap a CLI ``main``: a UserError becomes ``error: <message>`` on stderr and exit code 2;
    Ctrl-C and data-loader worker failures become one line too. In a multi-process run a rank's
    own failure is published for the others (they end with its cause), and a failed collective
    ends with the watchdog's line naming the rank that stopped or died (accel.watchdog)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            text = str(exc)
            if "Original Traceback" in text:            # raised inside a data-loader worker
                text = _root_cause(text).split(": ", 1)[-1]
            _fail(f"error: {one_line(text)}", 2)
        except Preempted as exc:
            # every rank got here after the same checkpoint barrier
            note = _ends["preempted"]() if "preempted" in _ends else ""
            print(f"preempted: {one_line(exc)}{note}", file=sys.stderr, flush=True)
            sys.exit(PREEMPTED_EXIT_CODE)
        except BrokenPipeError:
            # the reader of stdout went away (``| head``): a normal end for a printing tool. Later
            # writes to the closed pipe would raise again at exit: point stdout at /dev/null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)       # 128 + SIGPIPE, what a shell reports for a command cut off by `head`
        except KeyboardInterrupt:
            where = f" at {_where[0]()}" if _where else ""
            print(f"interrupted{where}", file=sys.stderr, flush=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001  only the failures below are shortened
            if "DataLoader worker" in str(exc):
                _fail(f"error: a data-loader worker failed: {one_line(_root_cause(str(exc)))}", 1)
            if _is_collective_failure(exc):
                first = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                ended = _ends["collective_failed"](first[:300]) if "collective_failed" in _ends else None
                if ended is None:
                    print(f"error: a collective with the other ranks failed (a rank stopped, died or "
                          f"exceeded --dist-timeout): {first[:300]}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                # a broken process group can abort the interpreter's teardown ("terminate called
                # without an active exception", exit 134): leave without it
                _hard_exit(ended[1] if ended else 1)
            # a bug on this rank: the others end with its cause, this one with its traceback
            if "failed" in _ends:
                _ends["failed"](f"error: {type(exc).__name__}: {one_line(exc)[:300]}", 1)
            raise

    return wrapper


def _fail(line, code):
    """Print ``line`` and exit ``code``; the other ranks of the run end with the same cause."""
    print(line, file=sys.stderr, flush=True)
    if "failed" in _ends:
        _ends["failed"](line, code)
    sys.exit(code)
