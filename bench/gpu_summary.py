"""Assemble bench/gpu_check.sh's one JSON summary: the GPU, torch, the CUDA tests' JUnit counts
(with the failures' names and messages) and the step benchmarks' JSON lines.

``python bench/gpu_summary.py --out FILE --junit JUNIT.xml --pytest-rc N
[--bench NAME STDOUT STDERR RC ...]``. Exits 0 only when every test that ran passed (skips are
listed, not failures) and every benchmark exited 0, so the shell script's exit status is the
check's verdict. ``summarize`` is separate from ``main`` so it can be tested without a GPU.
"""
import argparse
import datetime
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

STDERR_TAIL_LINES = 20


def read_junit(path):
    """Counts and names from a pytest ``--junitxml`` file: each testcase is passed, failed
    (``<failure>``), errored (``<error>``, e.g. a fixture that raised) or skipped."""
    path = Path(path)
    if not path.is_file():
        return {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skips": [],
                "missing": f"no JUnit file at {path} (pytest did not get as far as writing it)"}
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skips": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
        failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
        if failure is not None or error is not None:
            node = failure if failure is not None else error
            out["failed" if failure is not None else "errors"] += 1
            message = (node.get("message") or node.text or "").strip().splitlines()
            out["failures"].append({"test": name, "kind": node.tag, "message": message[0] if message else ""})
        elif skipped is not None:
            out["skipped"] += 1
            out["skips"].append({"test": name, "reason": skipped.get("message", "")})
        else:
            out["passed"] += 1
    return out


def read_bench(name, stdout, stderr, rc):
    """One benchmark's JSON lines (lines starting with ``{``), its exit code and, when it failed,
    the tail of its stderr (the traceback's last lines say why)."""
    stdout, stderr = Path(stdout), Path(stderr)
    rows, bad = [], []
    for line in (stdout.read_text().splitlines() if stdout.is_file() else []):
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad.append(line)
    entry = {"name": name, "exit_code": int(rc), "rows": rows}
    if bad:
        entry["unparsed_lines"] = bad
    if int(rc) != 0 and stderr.is_file():
        entry["stderr_tail"] = stderr.read_text().splitlines()[-STDERR_TAIL_LINES:]
    return entry


def summarize(junit, pytest_rc, benches, gpu, torch_version, cuda_version=None):
    """The summary dict. ``benches``: (name, stdout path, stderr path, exit code) tuples."""
    tests = {**read_junit(junit), "pytest_exit_code": int(pytest_rc)}
    bench = [read_bench(*b) for b in benches]
    ok = (tests["pytest_exit_code"] == 0 and tests["failed"] == 0 and tests["errors"] == 0
          and "missing" not in tests and all(b["exit_code"] == 0 for b in bench))
    return {"ok": ok, "date": datetime.datetime.now().isoformat(timespec="seconds"), "gpu": gpu,
            "torch": torch_version, "cuda": cuda_version, "tests": tests, "benchmarks": bench}


def one_line(summary):
    """What gpu_check.sh prints last."""
    t = summary["tests"]
    failed = [f"{b['name']} (exit {b['exit_code']})" for b in summary["benchmarks"] if b["exit_code"]]
    return (f"gpu_check: {'OK' if summary['ok'] else 'FAILED'} on {summary['gpu']}: CUDA tests "
            f"{t['passed']} passed, {t['failed'] + t['errors']} failed, {t['skipped']} skipped; "
            f"benchmarks {'failed: ' + ', '.join(failed) if failed else 'all ran'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--junit", required=True)
    ap.add_argument("--pytest-rc", type=int, required=True)
    ap.add_argument("--bench", nargs=4, action="append", default=[], metavar=("NAME", "STDOUT", "STDERR", "RC"))
    args = ap.parse_args(argv)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    summary = summarize(args.junit, args.pytest_rc, args.bench, gpu, torch.__version__, torch.version.cuda)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(one_line(summary) + f"; summary in {out}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
