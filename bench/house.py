"""The shape of the house, as one JSON line per measure: modules and code lines per package, the
longest functions and classes, and which package imports which.

Issue 40 reports these before and after the restructure; run it on any checkout:
``python bench/house.py [ROOT]``. Code lines are lines that are neither blank nor comment-only
(docstrings count: they are part of what a reader reads).
"""
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("accel", "detcore", "yolox", "ssd")


def code_lines(text):
    return sum(1 for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#"))


def package_of(rel):
    """``detcore/data/coco.py`` -> ``detcore.data``; a module directly in a top package -> that
    package."""
    parts = rel.parts[:-1]
    return ".".join(parts[:2]) if parts and parts[0] == "detcore" else (parts[0] if parts else "")


def imported(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def measure(root):
    root = Path(root)
    per_pkg = defaultdict(lambda: {"modules": 0, "code_lines": 0, "largest": ("", 0)})
    funcs, classes, graph = [], [], defaultdict(set)
    subpackages = {package_of(p.relative_to(root)) for pkg in PACKAGES
                   for p in (root / pkg).rglob("*.py")}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            text = path.read_text()
            name = package_of(rel)
            entry = per_pkg[name]
            n = code_lines(text)
            entry["modules"] += 1
            entry["code_lines"] += n
            if n > entry["largest"][1]:
                entry["largest"] = (rel.as_posix(), n)
            tree = ast.parse(text)
            for node in ast.walk(tree):
                span = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    funcs.append((span, f"{rel.as_posix()}:{node.name}"))
                elif isinstance(node, ast.ClassDef):
                    classes.append((span, f"{rel.as_posix()}:{node.name}"))
            for mod in imported(tree):
                parts = mod.split(".")
                target = ".".join(parts[:2]) if parts[0] == "detcore" and len(parts) > 1 else parts[0]
                if target not in subpackages:
                    target = parts[0]
                if target in subpackages and target != name:
                    graph[name].add(target)
    return per_pkg, sorted(funcs, reverse=True)[:5], sorted(classes, reverse=True)[:5], graph


def main(argv=None):
    root = (argv or sys.argv[1:] or [str(Path(__file__).resolve().parents[1])])[0]
    per_pkg, funcs, classes, graph = measure(root)
    for name in sorted(per_pkg):
        print(json.dumps({"package": name, **per_pkg[name]}))
    print(json.dumps({"longest_functions": funcs}))
    print(json.dumps({"longest_classes": classes}))
    print(json.dumps({"imports": {k: sorted(v) for k, v in sorted(graph.items())}}))


if __name__ == "__main__":
    main()
