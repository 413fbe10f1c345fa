#!/usr/bin/env python3
"""Check docs/conformance.md against the MQTT normative statement lists.

The matrix has a `## MQTT 3.1.1` and a `## MQTT 5.0` section, each holding one
table `| ID | Requirement | Binds | Evidence |`. Every ID of the matching
statement list must appear exactly once in its section, and every Evidence
cell must be one of:

    test: <relative/path>::<function>   a Rust `fn` or Python `def` in that file
    reason: <text>                      why no test is needed
    pending: #N                         not covered yet; issue N will cover it

The statement lists are read from $TERN_SPEC_DIR, else from docs/spec in the
repository (a fresh clone has everything it needs). Run from the repository root:

    python3 scripts/check_conformance.py [--strict] [--matrix PATH]

--strict also fails on `pending:` rows. Exit status 0 when the matrix is
consistent, 1 otherwise (one line per problem on stderr).
"""

import argparse
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTIONS = {
    "3.1.1": ("## MQTT 3.1.1", "mqtt-v3.1.1-normative.tsv"),
    "5.0": ("## MQTT 5.0", "mqtt-v5.0-normative.tsv"),
}
BINDS = {"server", "client", "both"}
TEST_RE = re.compile(r"test: (\S+)::([A-Za-z_][A-Za-z0-9_]*)")
REASON_RE = re.compile(r"reason: \S.*")
PENDING_RE = re.compile(r"pending: #[0-9]+")
CELL_SPLIT = re.compile(r"(?<!\\)\|")


def load_ids(path):
    """Statement IDs of one TSV file, in file order."""
    with open(path, encoding="utf-8") as f:
        return [line.split("\t", 1)[0].strip() for line in f if line.strip()]


def section_rows(lines, heading):
    """(line number, cells) of every table body row under `heading`, or None."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        return None
    rows = []
    for number, line in enumerate(lines[start + 1:], start + 2):
        if line.startswith("## "):
            break
        if not line.lstrip().startswith("|"):
            continue
        cells = [c.strip() for c in CELL_SPLIT.split(line.strip())[1:-1]]
        if cells and (cells[0] == "ID" or re.fullmatch(r":?-+:?", cells[0])):
            continue  # header or separator row
        rows.append((number, cells))
    return rows


def check_test(path, name):
    """Problem text for a `test:` reference, or None when it resolves."""
    target = REPO / path
    if Path(path).is_absolute() or not target.is_file():
        return f"test file not found: {path}"
    keyword = {".rs": "fn", ".py": "def"}.get(target.suffix)
    if keyword is None:
        return f"test file is neither .rs nor .py: {path}"
    text = target.read_text(encoding="utf-8", errors="replace")
    if not re.search(rf"\b{keyword}\s+{re.escape(name)}\b", text):
        return f"no `{keyword} {name}` in {path}"
    return None


def check(matrix, spec_dir, strict):
    """Return (problems, counts) for the matrix file."""
    problems = []
    counts = {"statements": 0, "test": 0, "reason": 0, "pending": 0}
    lines = matrix.read_text(encoding="utf-8").splitlines()
    shown = os.path.relpath(matrix)
    for version, (heading, tsv) in SECTIONS.items():
        known = load_ids(spec_dir / tsv)
        counts["statements"] += len(known)
        rows = section_rows(lines, heading)
        if rows is None:
            problems.append(f"{shown}: missing section `{heading}`")
            continue
        seen = {}
        for number, cells in rows:
            where = f"{shown}:{number}: {version} {cells[0] if cells and cells[0] else '?'}"
            if len(cells) != 4:
                problems.append(f"{where}: expected 4 cells, found {len(cells)}")
                continue
            ident, _, binds, evidence = cells
            if ident in seen:
                problems.append(f"{where}: duplicate ID (first on line {seen[ident]})")
                continue
            seen[ident] = number
            if ident not in known:
                problems.append(f"{where}: ID not in {tsv}")
            if binds not in BINDS:
                problems.append(f"{where}: Binds must be server, client or both, not {binds!r}")
            test = TEST_RE.fullmatch(evidence)
            if test:
                counts["test"] += 1
                problem = check_test(*test.groups())
                if problem:
                    problems.append(f"{where}: {problem}")
            elif REASON_RE.fullmatch(evidence):
                counts["reason"] += 1
            elif PENDING_RE.fullmatch(evidence):
                counts["pending"] += 1
                if strict:
                    problems.append(f"{where}: pending row not allowed with --strict")
            else:
                problems.append(f"{where}: bad Evidence {evidence!r}")
        for ident in known:
            if ident not in seen:
                problems.append(f"{shown}: {version} {ident}: missing from `{heading}`")
    return problems, counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="also fail on pending rows")
    parser.add_argument("--matrix", type=Path, default=REPO / "docs" / "conformance.md",
                        help="matrix file to check (default: docs/conformance.md)")
    args = parser.parse_args()
    spec_dir = Path(os.environ.get("TERN_SPEC_DIR") or REPO / "docs" / "spec")
    for path in (args.matrix, *(spec_dir / tsv for _, tsv in SECTIONS.values())):
        if not path.is_file():
            print(f"conformance: cannot read {path}", file=sys.stderr)
            return 1
    problems, counts = check(args.matrix, spec_dir, args.strict)
    for problem in problems:
        print(problem, file=sys.stderr)
    print("conformance: {statements} statements, {test} tested, {reason} reasoned, "
          "{pending} pending".format(**counts))
    if problems:
        print(f"conformance: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
