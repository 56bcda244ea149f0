"""Checks that the reference engines of scripts/bench-batch.sh computed what
medallion computed, so that their times measure the same work.

medallion's figures are read from its lake with `medallion sql --format
json` (the queries of modelsql.FIGURES); each reference engine's come from
the JSON file its script wrote (--figures). Compared: total revenue and
revenue per category (relative difference at most 1e-6: the engines add the
same doubles in other orders), the top 3 countries in order, customers per
RFM segment, the rows of silver.sales_master and of its quarantine, and the
quarantine's rows per failed_rule and per failed_rules (exactly).

Prints one line `agreement: …` and exits 0 when all agree; otherwise one
line per differing figure, naming the figure and both values, and exits 1.

Usage: agree.py --medallion BIN --lake URL --date YYYY-MM-DD
                ENGINE=FIGURES.json [ENGINE=FIGURES.json ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import modelsql

RELATIVE_TOLERANCE = 1e-6


def medallion_figures(binary: str, lake: str, date: str) -> dict:
    def rows_of(query: str, name: str) -> list[list]:
        done = subprocess.run(
            [binary, "sql", "--quiet", "--lake", lake, "--format", "json", query],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"medallion sql failed for {name}: {message}")
        return [list(row.values()) for row in json.loads(done.stdout or "[]")]

    return modelsql.figures(date, "datafusion", rows_of)


def close(a: object, b: object) -> bool:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b))


def differences(kind: str, ours: object, theirs: object) -> list[tuple[str, object, object]]:
    """(what, medallion's value, the engine's value) for each difference."""
    if kind == "number":
        return [] if close(ours, theirs) else [("", ours, theirs)]
    if kind == "numbers":
        if not isinstance(theirs, dict) or set(ours) != set(theirs):
            return [(" (keys)", sorted(ours), sorted(theirs) if isinstance(theirs, dict) else theirs)]
        return [(f" [{key}]", ours[key], theirs[key]) for key in sorted(ours) if not close(ours[key], theirs[key])]
    return [] if ours == theirs else [("", ours, theirs)]


def shown(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medallion", required=True, help="the medallion binary")
    parser.add_argument("--lake", required=True, help="medallion's lake URL")
    parser.add_argument("--date", required=True)
    parser.add_argument("engines", nargs="+", metavar="ENGINE=FIGURES.json")
    args = parser.parse_args()

    ours = medallion_figures(args.medallion, args.lake, args.date)
    failed = False
    for spec in args.engines:
        engine, _, path = spec.partition("=")
        theirs = json.loads(Path(path).read_text())
        for name, _, kind in modelsql.FIGURES:
            for what, a, b in differences(kind, ours[name], theirs.get(name)):
                print(f"disagreement on {name}{what}: medallion {shown(a)} vs {engine} {shown(b)}")
                failed = True
    if failed:
        sys.exit(1)
    engines = " = ".join(["medallion"] + [spec.partition("=")[0] for spec in args.engines])
    figures = ", ".join(name for name, _, _ in modelsql.FIGURES)
    print(f"agreement: {engines} on {figures} (revenues to {RELATIVE_TOLERANCE:g} relative)")


if __name__ == "__main__":
    main()
