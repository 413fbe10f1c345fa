#!/usr/bin/env python3
"""Repository tidy rules that rustfmt and clippy do not cover.

- Crate dependency rules from ARCHITECTURE.md (read from `cargo metadata`).
- Source files stay focused: at most 800 lines under crates/*/src.
- No leftover debugging or placeholder markers in committed Rust code.
- Nothing tracked reads outside the repository: a fresh clone alone must pass every test, so no
  script, test or source names a path in a sibling directory (`../<name>/`).
"""
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 800
# crate -> (workspace crates it may depend on, external crates it must not use)
ASYNC_IO = {"tokio", "mio", "async-std", "socket2"}
RULES = {
    "tern-codec": (set(), ASYNC_IO),
    # The core emits store operations; it never calls (or knows) the store or its engine.
    "tern-core": ({"tern-codec"}, ASYNC_IO | {"fjall", "redb", "async-nats"}),
    # The store implements the core's trait on its engine; it knows nothing of the network.
    "tern-store": ({"tern-codec", "tern-core"}, ASYNC_IO),
    # The network runtime drives any `Store`; the engine stays behind the trait.
    "tern-net": ({"tern-codec", "tern-core"}, {"fjall", "redb", "async-nats"}),
    # The cluster layer does NATS I/O around the core, as tern-net does sockets: it never
    # reaches into the network runtime or the store, and the core never sees NATS.
    "tern-cluster": ({"tern-codec", "tern-core"}, {"fjall", "redb"}),
    "tern-bench": ({"tern-codec"}, set()),
    # Authentication methods and ACLs: decision functions behind the core's hooks, no runtime.
    "tern-auth": ({"tern-codec", "tern-core"}, ASYNC_IO),
    # The HTTP bridge: an edge on the network runtime's broker thread, with the auth crate's
    # keys and ACL engine; it never touches the store's engine.
    "tern-http": (
        {"tern-codec", "tern-core", "tern-net", "tern-auth", "tern-console"},
        {"fjall", "redb"},
    ),
    # The mosquitto-go-auth Redis layout as a user directory: an edge like tern-net, doing Redis
    # I/O for the auth crate's decisions; it never sees the core, the network runtime or the store.
    "tern-redis-auth": ({"tern-auth"}, {"fjall", "redb", "async-nats"}),
    # The web console's files, built and embedded: no broker code, no runtime.
    "tern-console": (set(), ASYNC_IO | {"fjall", "redb"}),
    # The client shares only the codec with the broker.
    "tern-client": ({"tern-codec"}, {"fjall", "redb"}),
}
MARKERS = re.compile(r"\b(dbg!|todo!|unimplemented!|FIXME|XXX)")
# A path that climbs out of the repository into a sibling directory.
CLIMB = re.compile(r"(?:\.\./)+[A-Za-z_][\w.-]*")
PARENT_JOIN = re.compile(r"""\.parent\s*/\s*["']""")
CHECKED_SUFFIXES = {".rs", ".py", ".sh", ".toml"}


def dependency_problems():
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"], cwd=ROOT
        )
    )
    workspace = {p["name"] for p in meta["packages"]}
    problems = []
    for package in meta["packages"]:
        rule = RULES.get(package["name"])
        if rule is None:
            continue
        allowed, banned = rule
        for dep in package["dependencies"]:
            if dep.get("kind") == "dev":
                continue
            name = dep["name"]
            if name in workspace and name not in allowed:
                problems.append(f"{package['name']} must not depend on {name}")
            if name in banned:
                problems.append(f"{package['name']} must not use {name}")
    return problems


def source_problems():
    problems = []
    for path in sorted(ROOT.glob("crates/*/src/**/*.rs")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        lines = text.count("\n")
        if lines > MAX_LINES:
            problems.append(f"{rel}: {lines} lines (limit {MAX_LINES}); split it by concern")
        for number, line in enumerate(text.splitlines(), 1):
            if MARKERS.search(line):
                problems.append(f"{rel}:{number}: leftover marker: {line.strip()}")
    return problems


def outside_problems():
    """Tracked code and scripts that would read from beside the repository."""
    tracked = subprocess.check_output(["git", "ls-files"], cwd=ROOT, text=True).splitlines()
    problems = []
    for rel in tracked:
        path = ROOT / rel
        if path.suffix not in CHECKED_SUFFIXES or not path.is_file():
            continue
        if rel == "scripts/tidy.py":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        bases = [path.parent, crate_dir(path)]
        for number, line in enumerate(text.splitlines(), 1):
            escapes = PARENT_JOIN.search(line) is not None or any(
                all(not inside(base / found.group(0)) for base in bases)
                for found in CLIMB.finditer(line)
            )
            if escapes:
                problems.append(f"{rel}:{number}: reads outside the repository: {line.strip()}")
    return problems


def crate_dir(path):
    """The nearest folder above `path` with a Cargo.toml (relative paths in Rust resolve there)."""
    for parent in path.parents:
        if (parent / "Cargo.toml").is_file():
            return parent
    return ROOT


def inside(path):
    return path.resolve().is_relative_to(ROOT)


def main():
    problems = dependency_problems() + source_problems() + outside_problems()
    for problem in problems:
        print(f"tidy: {problem}")
    if problems:
        sys.exit(1)
    print("tidy: ok")


if __name__ == "__main__":
    main()
