"""Every command in README.md, docs/*.md and bench/README.md parses with the real parser of the
program it calls (tests/docs_check.py says how each kind is checked), so the docs cannot rot."""
import json
import os
import re
import subprocess
import sys

import pytest

import docs_check
from docs_check import PAGES, ROOT, commands

RUNNER = ROOT / "tests" / "docs_check.py"


def run_checks(items):
    lines = "".join(json.dumps(item) + "\n" for item in items)
    proc = subprocess.run([sys.executable, str(RUNNER)], input=lines, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def results():
    items = [{"page": str(page.relative_to(ROOT)), "line": n, "command": c}
             for page in PAGES for n, c in commands(page)]
    return run_checks(items)


def test_every_documented_command_parses(results):
    failures = [f"{r['page']}:{r['line']}: {r['command']}\n    {r['error']}" for r in results if "error" in r]
    assert not failures, "\n".join(failures)


def test_the_check_covers_every_page_and_parses_most_commands(results):
    by_page = {r["page"] for r in results}
    assert {"README.md", "docs/yolox.md", "docs/ssd.md", "docs/custom_data.md", "docs/install.md",
            "docs/performance.md", "bench/README.md"} <= by_page
    parsed = [r for r in results if "parsed" in r.get("how", "")]
    assert len(results) > 120 and len(parsed) > 60, (len(results), len(parsed))
    # the quick commands of the top page are parsed, not merely found
    readme = [r for r in results if r["page"] == "README.md" and r["command"].startswith("python tools/train.py")]
    assert readme and all(r["how"] == "parsed" for r in readme)


def test_the_check_catches_a_wrong_flag_an_unknown_override_and_a_missing_script(tmp_path):
    bad = ["python tools/train.py -n yolox-s -b 8 --no-such-flag",
           "python tools/train.py -n yolox-s -b 8 no_such_key 3",
           "python tools/train.py -n yolox-s -b 8 max_epoch zero",
           "torchrun --nproc_per_node 2 --no-such-option ssd/train.py -d x",
           "mpirun -n 2 python ssd/train.py -d x --batch-size many",
           "python tools/no_such_tool.py --x 1",
           "detkit-no-such-script --x 1",
           "pip install -e .[no_such_extra]",
           "cp exps/no_such_exp.py my_exp.py"]
    good = ["python tools/train.py -n yolox-s -b 8 max_epoch 3",
            "python tools/demo.py image --onnx m.onnx --path IMG --save_result",
            "python ssd/export_onnx.py --checkpoint c.pth [--decode]"]
    out = run_checks([{"page": "t", "line": i, "command": c} for i, c in enumerate(bad + good)])
    assert [("error" in r) for r in out] == [True] * len(bad) + [False] * len(good), out


def test_notation_expands_to_concrete_lines():
    assert docs_check.expand("python tools/fault_drill.py --model {yolox,ssd} --nproc N") == [
        ["python", "tools/fault_drill.py", "--model", "yolox", "--nproc", "2"],
        ["python", "tools/fault_drill.py", "--model", "ssd", "--nproc", "2"]]
    assert docs_check.expand("x --rdzv-endpoint HOST0:PORT [--decode]") == [
        ["x", "--rdzv-endpoint", "127.0.0.1:29500", "--decode"], ["x", "--rdzv-endpoint", "127.0.0.1:29500"]]
    assert docs_check.expand('pip install -e ".[test,onnx]"') == [["pip", "install", "-e", ".[test,onnx]"]]


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_and_anchor_exists():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and anchor not in {slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}:
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_every_python_block_runs(tmp_path):
    """Each ```python block of README and docs runs as written in an empty folder (the API
    example, marked for tests/test_api.py, runs there instead)."""
    marker = "<!-- tests/test_api.py runs the next python block verbatim -->"
    blocks = [(page, m) for page in PAGES
              for m in re.finditer(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", page.read_text(), re.S)]
    assert sum(1 for _, m in blocks if m.group(1) and marker in m.group(1)) == 1
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    ran = 0
    for page, m in blocks:
        if m.group(1) and marker in m.group(1):
            continue
        proc = subprocess.run([sys.executable, "-c", m.group(2)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{page.relative_to(ROOT)}: {proc.stderr[-2000:]}"
        ran += 1
    assert ran >= 1
