"""The report of one module's mutation run (called by tools/mutation.sh, not by hand).

Reads a cosmic-ray session (``cosmic-ray dump`` JSON lines: one [work item, result] pair per mutant),
leaves out the equivalent mutants listed in tools/mutation/equivalent.txt, prints one line

    MODULE: killed K, survived S, timeout T, other O, total N (equivalent E left out), kill rate R%, wall W s

and writes OUT/MODULE_SLUG.json (the counts and every survivor with its diff) and updates
OUT/report.csv (one row per module, the latest run). Kill rate = killed / (total - equivalent): a
timeout is counted apart, not as killed (a test run that hung on a mutant is worth a look, but a
slow machine can cause it too); "other" is a mutant whose run could not be judged (an exception in
cosmic-ray itself, an incompetent mutant) and is in the total.
"""
import argparse
import csv
import json
import sys
from pathlib import Path

FIELDS = ["module", "killed", "survived", "timeout", "other", "total", "equivalent", "kill_rate", "wall_s",
          "tests"]


def read_equivalent(path, module):
    """{(operator, occurrence): (line:col, reason)} of the module's listed equivalent mutants."""
    listed = {}
    if not Path(path).exists():
        return listed
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 4)
        if len(parts) < 5:
            sys.exit(f"{path}:{number}: want MODULE_PATH OPERATOR OCCURRENCE LINE:COL reason, got {raw!r}")
        if parts[0] == module:
            listed[(parts[1], int(parts[2]))] = (parts[3], parts[4])
    return listed


def outcome(result):
    """killed / survived / timeout / other / pending of one mutant's result."""
    if result is None:
        return "pending"
    if result.get("worker_outcome") != "normal":
        return "other"
    if result.get("test_outcome") == "survived":
        return "survived"
    if result.get("test_outcome") == "killed":
        return "timeout" if (result.get("output") or "").strip() == "timeout" else "killed"
    return "other"


def tally(pairs, module, equivalent):
    counts = dict.fromkeys(("killed", "survived", "timeout", "other", "pending", "equivalent"), 0)
    survivors, seen = [], set()
    for item, result in pairs:
        mutation = item["mutations"][0]
        key = (mutation["operator_name"], int(mutation["occurrence"]))
        where = "{}:{}".format(*mutation["start_pos"])
        if key in equivalent:
            seen.add(key)
            counts["equivalent"] += 1
            if equivalent[key][0] != where:
                print(f"mutation report: {module} {key[0]} {key[1]} is listed as equivalent at {equivalent[key][0]}"
                      f" but is at {where} now: look at it again", file=sys.stderr)
            continue
        kind = outcome(result)
        counts[kind] += 1
        if kind == "survived":
            survivors.append({"operator": key[0], "occurrence": key[1], "at": where,
                              "definition": mutation.get("definition_name"), "diff": result.get("diff")})
    for key in sorted(set(equivalent) - seen):
        print(f"mutation report: {module} {key[0]} {key[1]} is listed as equivalent but no such mutant exists now",
              file=sys.stderr)
    return counts, survivors


def write_csv(path, row):
    rows = []
    if path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("module") != row["module"]]
    rows.append(row)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["module"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dump", required=True, help="the output of `cosmic-ray dump SESSION`")
    parser.add_argument("--module", required=True, help="the module path, as in modules.txt")
    parser.add_argument("--equivalent", required=True, help="tools/mutation/equivalent.txt")
    parser.add_argument("--wall", type=float, required=True, help="seconds the run took")
    parser.add_argument("--tests", default="", help="the pytest arguments every mutant ran")
    parser.add_argument("--out", required=True, help="the report folder")
    args = parser.parse_args(argv)

    pairs = [json.loads(line) for line in Path(args.dump).read_text().splitlines() if line.strip()]
    counts, survivors = tally(pairs, args.module, read_equivalent(args.equivalent, args.module))
    total = counts["killed"] + counts["survived"] + counts["timeout"] + counts["other"]
    rate = 100.0 * counts["killed"] / total if total else 0.0
    row = {"module": args.module, **{k: counts[k] for k in ("killed", "survived", "timeout", "other")},
           "total": total, "equivalent": counts["equivalent"], "kill_rate": f"{rate:.1f}",
           "wall_s": f"{args.wall:.0f}", "tests": args.tests}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = args.module.replace("/", ".").removesuffix(".py")
    (out / f"{slug}.json").write_text(json.dumps({**row, "pending": counts["pending"], "survivors": survivors},
                                                 indent=1) + "\n")
    write_csv(out / "report.csv", row)
    for s in survivors:
        print(f"  survived: {s['operator']} {s['occurrence']} at {s['at']} in {s['definition']}")
    pending = f", {counts['pending']} not run (stopped early)" if counts["pending"] else ""
    print(f"{args.module}: killed {counts['killed']}, survived {counts['survived']}, timeout {counts['timeout']},"
          f" other {counts['other']}, total {total} (equivalent {counts['equivalent']} left out){pending},"
          f" kill rate {rate:.1f}%, wall {args.wall:.0f} s")
    print(f"mutation report: {out / (slug + '.json')} (survivors with diffs), {out / 'report.csv'}")


if __name__ == "__main__":
    main()
