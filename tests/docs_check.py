"""The docs-commands check: every command shown in README.md, docs/*.md and bench/README.md is
parsed by the real parser of the program it calls, so a renamed flag or exp key breaks the suite.

``commands(path)`` finds the commands: each line of a ```bash block (``\\`` continuations joined,
``# comments`` dropped) and each inline code span that starts like a command (``python ``,
``detkit-``, ``torchrun`` ...). ``expand`` turns the docs' notation into concrete lines: ``{a,b}``
gives one line per choice, ``[X]`` one line with and one without X, and placeholder words (``N``,
``PORT``, ``HOST0``) get sample values; other placeholders (``DIR``, ``IMG_OR_DIR``) stay as they
are, since parsing never opens a path.

``check(line)``, run as ``python tests/docs_check.py`` (JSON lines in, JSON lines out, one process
for all commands so the scripts' import-time settings never reach the test process):

- a project script or module (``python tools/train.py``, ``python -m yolox.tools.eval``,
  ``python bench/x.py``, ``detkit-*``, and the script after ``torchrun``/``mpirun``) is executed
  until its argument parser returns, then stopped: the parse is the real one, and for YOLOX tools
  the trailing ``key value`` overrides are applied to the real exp (``build_exp``). A bare mention
  (``detkit-train`` with no arguments) only has to resolve;
- ``torchrun`` options go through torch's own launcher parser; ``mpirun -n N`` is stripped;
- ``python -m`` of another package (``venv``, ``mlperf_logging...``) is parsed the same way;
  ``python -c`` runs;
- ``bash SCRIPT``: the script exists and ``bash -n`` accepts it; ``cp SRC DST``: SRC exists (and
  later lines of the same page may use DST for SRC); ``pip install .[extras]``: each extra exists;
- a line ending in ``...`` is a pattern (its launcher options are still parsed); other programs
  (``git``, ``tar``, ``export``) are external, checked by ``bash -n`` only.
"""
import argparse
import contextlib
import io
import itertools
import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
STARTS = ("python ", "python3 ", "bash ", "torchrun ", "mpirun ", "detkit-", "pip ", "cp ")
PLACEHOLDERS = {"N": "2", "K": "2", "M": "2", "R": "0", "G": "1", "SECONDS": "60", "NORM": "10"}
SUBSTRINGS = {"HOST0": "127.0.0.1", "HOST": "127.0.0.1", "PORT": "29500"}


def commands(path):
    """[(line number, command)] of one page."""
    text = path.read_text()
    found = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        first = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).split("\n")
        joined, start = "", None
        for offset, raw in enumerate(lines):
            if start is None:
                start = first + offset
            joined += raw.rstrip("\\").rstrip() + " " if raw.rstrip().endswith("\\") else raw
            if raw.rstrip().endswith("\\"):
                continue
            line = "" if joined.lstrip().startswith("#") else re.split(r"\s+#", joined)[0].strip()
            if line:
                found.append((start, line))
            joined, start = "", None
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for span in re.finditer(r"`([^`]+)`", prose):       # a span may wrap onto the next line
        command = " ".join(span.group(1).split())
        if command.startswith(STARTS):
            found.append((prose.count("\n", 0, span.start()) + 1, command))
    return found


def expand(line):
    """The concrete command lines a documented line stands for."""
    brace = re.search(r"\{([^{}]*,[^{}]*)\}", line)
    if brace:
        return [out for choice in brace.group(1).split(",")
                for out in expand(line[:brace.start()] + choice + line[brace.end():])]
    optional = re.search(r"(?<!\S)\[([^\[\]]+)\]", line)
    if optional:
        return (expand(line[:optional.start()] + optional.group(1) + line[optional.end():])
                + expand(line[:optional.start()].rstrip() + " " + line[optional.end():].lstrip()))
    tokens = []
    for token in shlex.split(line):
        token = PLACEHOLDERS.get(token, token)
        if not token.startswith("-"):
            for word, value in SUBSTRINGS.items():
                token = re.sub(rf"\b{word}\b", value, token)
        tokens.append(token)
    return [tokens]


class Parsed(BaseException):
    """Raised once the program's outermost argument parse returns: nothing after it runs."""

    def __init__(self, namespace):
        super().__init__("parsed")
        self.namespace = namespace


@contextlib.contextmanager
def stop_after_parse():
    """Every parse_* method of argparse, outermost call only: parse for real, then stop."""
    names = ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")
    originals = {name: getattr(argparse.ArgumentParser, name) for name in names}
    depth = [0]

    def wrap(name):
        def parse(self, *args, **kwargs):
            depth[0] += 1
            try:
                result = originals[name](self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0]:
                return result
            namespace, extra = result if name.startswith("parse_known") else (result, [])
            if extra:   # the project's tools accept no unknown arguments
                self.error(f"unrecognized arguments: {' '.join(extra)}")
            raise Parsed(namespace)
        return parse

    for name in names:
        setattr(argparse.ArgumentParser, name, wrap(name))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(argparse.ArgumentParser, name, method)


def parse_program(run, argv0, args):
    """Run ``run()`` with ``sys.argv = [argv0, *args]`` until its parser returns; the namespace."""
    saved = sys.argv
    sys.argv = [argv0, *args]
    err = io.StringIO()
    try:
        with stop_after_parse(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            run()
    except Parsed as done:
        return done.namespace
    except SystemExit as exc:
        raise ValueError(f"exit {exc.code}: {err.getvalue().strip().splitlines()[-1:]}") from None
    finally:
        sys.argv = saved
    raise ValueError("the program finished without parsing arguments")


def check_exp(namespace):
    """YOLOX tools: the exp named by -f/-n with the trailing overrides, as the tool builds it."""
    if getattr(namespace, "exp_file", None) is None and getattr(namespace, "name", None) is None:
        return
    if not hasattr(namespace, "opts"):
        return
    from yolox.core.cli import build_exp

    build_exp(namespace, need_data=False)


def console_script(name):
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
    if not found:
        raise ValueError(f"no console script {name} (setup.py CONSOLE_SCRIPTS)")
    return found[0]


def python_program(tokens, aliases):
    """``python ...`` tokens -> (how it was checked)."""
    if tokens[:1] == ["-c"]:
        proc = subprocess.run([sys.executable, *tokens], cwd=ROOT, capture_output=True, text=True, timeout=300)
        if proc.returncode:
            raise ValueError(proc.stderr.strip().splitlines()[-1:])
        return "ran"
    if tokens[:1] == ["-m"]:
        module, args = tokens[1], tokens[2:]
        if module == "torch.distributed.run":
            return launcher(["torchrun", *args], aliases)
        if not args:
            import importlib.util
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"no module {module}")
            return "resolved"
        namespace = parse_program(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), module, args)
        check_exp(namespace)
        return "parsed"
    script, args = tokens[0], tokens[1:]
    path = ROOT / script
    if not path.is_file():
        raise ValueError(f"no script {script} in the repository")
    if not args:
        return "resolved"

    def run():   # as `python path`: the script's folder first on sys.path
        saved = list(sys.path)
        sys.path.insert(0, str(path.parent))
        try:
            runpy.run_path(str(path), run_name="__main__")
        finally:
            sys.path[:] = saved
    namespace = parse_program(run, str(path), args)
    check_exp(namespace)
    return "parsed"


def launcher(tokens, aliases):
    """``torchrun OPTIONS SCRIPT ARGS`` (torch's own parser) or ``mpirun -n N [opts] python ...``."""
    if tokens[0] == "mpirun":
        rest = list(itertools.dropwhile(lambda t: t not in ("python", "python3"), tokens))
        return python_program(rest[1:], aliases) if rest else "pattern"
    from torch.distributed.run import get_args_parser

    args = tokens[1:]
    if not any(a.endswith(".py") for a in args) and "-m" not in args:
        args = [*args, "SCRIPT.py"]          # options only (a pattern): still torch's parse
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = get_args_parser().parse_args(args)
    except SystemExit:
        raise ValueError(f"torchrun: {err.getvalue().strip().splitlines()[-1:]}") from None
    if parsed.training_script == "SCRIPT.py":
        return "parsed"
    if parsed.module:
        return python_program(["-m", parsed.training_script, *parsed.training_script_args], aliases)
    return python_program([parsed.training_script, *parsed.training_script_args], aliases)


def extras_exist(tokens):
    setup = (ROOT / "setup.py").read_text()
    for token in tokens:
        match = re.fullmatch(r"\.\[([\w,]+)\]", token)
        for extra in match.group(1).split(",") if match else []:
            if not re.search(rf'"{extra}":', setup):
                raise ValueError(f"setup.py has no extra {extra!r}")
    return "resolved"


def check(line, aliases):
    """How one documented line was checked ("parsed", "resolved", "ran", "pattern",
    "external"); ValueError (or the tool's UserError) when it would fail."""
    if line.rstrip().endswith("..."):
        for head in expand(line.rstrip()[:-3]):
            if head[:1] == ["torchrun"]:
                launcher(head, aliases)
        return "pattern"
    out = set()
    for tokens in expand(line):
        tokens = [aliases.get(t, t) for t in tokens]       # a file an earlier `cp` made
        while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):   # VAR=value prefixes
            tokens = tokens[1:]
        program = tokens[0]
        if program in ("python", "python3"):
            out.add(python_program(tokens[1:], aliases))
        elif program in ("torchrun", "mpirun"):
            out.add(launcher(tokens, aliases))
        elif program.startswith("detkit-"):
            entry = console_script(program)
            if len(tokens) > 1:
                check_exp(parse_program(entry.load(), program, tokens[1:]))
                out.add("parsed")
            else:
                out.add("resolved")
        elif program == "bash":
            script = ROOT / tokens[1]
            if not script.is_file():
                raise ValueError(f"no script {tokens[1]}")
            if subprocess.run(["bash", "-n", str(script)]).returncode:
                raise ValueError(f"bash -n {tokens[1]} fails")
            out.add("resolved")
        elif program == "cp":
            if not (ROOT / tokens[1]).is_file():
                raise ValueError(f"no file {tokens[1]} to copy")
            aliases[shlex.split(line)[2]] = tokens[1]
            out.add("resolved")
        elif program == "pip":
            out.add(extras_exist(tokens[2:]))
        else:
            if subprocess.run(["bash", "-n", "-c", line]).returncode:
                raise ValueError("not valid shell")
            out.add("external")
    return "+".join(sorted(out))


def main():
    """stdin: JSON lines {"page", "line", "command"}; stdout: the same with "how" or "error"."""
    sys.path.insert(0, str(ROOT))
    aliases = {}
    page = None
    for raw in sys.stdin:
        item = json.loads(raw)
        if item["page"] != page:
            page, aliases = item["page"], {}
        try:
            item["how"] = check(item["command"], aliases)
        except Exception as exc:  # noqa: BLE001  every failure is reported against its line
            item["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(item), flush=True)


if __name__ == "__main__":
    main()
