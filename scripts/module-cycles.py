#!/usr/bin/env python3
"""Finds import cycles between the modules of Rust crates.

    python3 scripts/module-cycles.py                     # every crate under crates/ and tools/
    python3 scripts/module-cycles.py crates/weir-canary  # one crate
    python3 scripts/module-cycles.py --self-test         # checks the checker on made-up crates

Rust compiles module cycles happily; each one still means a type sits in the wrong module
(ARCHITECTURE.md section 2.4). Exit status 1 when any crate has one, 0 otherwise.

How it reads a crate (no Rust parser, so the rules are deliberately simple):
- modules are files: `src/lib.rs` or `src/main.rs` is the root, `src/a.rs` is `a`,
  `src/a/b.rs` is `a::b` (`foo.rs` + `foo/`, never `mod.rs`: `a/mod.rs` is read as `a` too);
- a dependency is a path `crate::a::b...` or `super::...` anywhere in code, string literals
  included (serde's `serialize_with = "crate::units::ser_duration_ms"` is a dependency), but
  not in `//` comments (a doc link is not a dependency); a path through a name the crate root
  re-exports (`crate::Snapshot`) counts as a dependency on the module that defines it;
- test code does not count: files named `tests.rs` and everything after a file's first
  `#[cfg(test)]` are skipped;
- a module and its own submodules are one area (`controller.rs` + `controller/gates.rs` may
  use each other); cycles are looked for among the children of each module, root included,
  with every dependency lifted to the child that contains each end.
"""

import os
import re
import sys
from collections import defaultdict

PATH = re.compile(r"\b(crate::|(?:super::)+)([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)")
USE_GROUP = re.compile(r"pub\s+use\s+([a-z_][a-z0-9_]*)::\{([^}]*)\}", re.S)
USE_ONE = re.compile(r"pub\s+use\s+([a-z_][a-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)\s*;")


def strip_comments(line):
    """The line without its `//` comment; `//` inside a string literal is kept."""
    in_str = False
    i = 0
    while i < len(line):
        c = line[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif line.startswith("//", i):
            return line[:i]
        i += 1
    return line


def modules_of(src):
    """{module path tuple: file} for every .rs file under src."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)[: -len(".rs")].split(os.sep)
            if rel in (["lib"], ["main"]):
                path = ()
            elif rel[-1] == "mod":
                path = tuple(rel[:-1])
            else:
                path = tuple(rel)
            if path == () and () in mods and rel == ["main"]:
                continue  # a crate with lib.rs and main.rs: read the library
            mods[path] = full
    return mods


def code_lines(file):
    with open(file, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip().startswith("#[cfg(test)]"):
                return
            yield number, strip_comments(line)


def root_reexports(mods):
    """{name: module} for the names the crate root re-exports with `pub use module::...`."""
    text = "".join(line for _, line in code_lines(mods[()]))
    names = {}
    for module, group in USE_GROUP.findall(text):
        for name in group.split(","):
            name = name.strip().split(" as ")[-1].strip()
            if name:
                names[name] = (module,)
    for module, name in USE_ONE.findall(text):
        names[name] = (module,)
    return names


def resolve(segments, mods):
    """The longest module prefix of segments."""
    best = ()
    for i in range(1, len(segments) + 1):
        if tuple(segments[:i]) in mods:
            best = tuple(segments[:i])
    return best


def dependencies(mods):
    """[(from, to, file, line)] for every path from one module into another."""
    reexports = root_reexports(mods) if () in mods else {}
    deps = []
    for here, file in mods.items():
        for number, line in code_lines(file):
            for m in PATH.finditer(line):
                head, segments = m.group(1), m.group(2).split("::")
                if head == "crate::":
                    base = ()
                else:
                    ups = head.count("super")
                    if ups > len(here):
                        continue
                    base = here[: len(here) - ups]
                target = resolve(list(base) + segments, mods)
                if target == () and segments and segments[0] in reexports:
                    target = reexports[segments[0]]
                if len(target) < len(base):
                    target = base
                if target != here:
                    deps.append((here, target, file, number))
    return deps


def cycles_among(children, edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(children):
        if v not in index:
            visit(v)
    return out


def crate_cycles(crate):
    src = os.path.join(crate, "src")
    mods = modules_of(src)
    deps = dependencies(mods)
    found = []
    for parent in sorted(mods):
        depth = len(parent)
        children = {m[: depth + 1] for m in mods if len(m) > depth and m[:depth] == parent}
        edges, evidence = defaultdict(set), defaultdict(list)
        for a, b, file, line in deps:
            if a[:depth] != parent or b[:depth] != parent:
                continue
            if len(a) <= depth or len(b) <= depth:
                continue  # one end is the parent itself: inside one area
            ca, cb = a[: depth + 1], b[: depth + 1]
            if ca != cb:
                edges[ca].add(cb)
                evidence[(ca, cb)].append(f"{os.path.relpath(file)}:{line}")
        for comp in cycles_among(children, edges):
            members = set(comp)
            proof = [
                f"    {'::'.join(a)} -> {'::'.join(b)}: {', '.join(ev[:3])}"
                for (a, b), ev in sorted(evidence.items())
                if a in members and b in members
            ]
            found.append((" <-> ".join("::".join(c) for c in comp), proof))
    return len(mods), found


def self_test():
    """Made-up crates with known answers: the rules above, each pinned once."""
    import tempfile

    cases = [
        # (files, expected cycles)
        ({"lib.rs": "", "a.rs": "use crate::b::X;", "b.rs": "use crate::a::Y;"}, ["a <-> b"]),
        # A doc link is not a dependency; a serde path in a string is.
        ({"lib.rs": "", "a.rs": "/// [`X`](crate::b::X)", "b.rs": "use crate::a::Y;"}, []),
        ({"lib.rs": "", "a.rs": '#[serde(with = "crate::b::f")]', "b.rs": "use crate::a::Y;"}, ["a <-> b"]),
        # A name re-exported by the root counts as its module.
        ({"lib.rs": "pub use b::{X, Z};", "a.rs": "fn f(_: crate::X) {}", "b.rs": "use crate::a::Y;"}, ["a <-> b"]),
        # A module and its submodule are one area; siblings under it are checked.
        ({"lib.rs": "", "a.rs": "mod g; use g::Z;", "a/g.rs": "use super::Y;"}, []),
        ({"lib.rs": "", "a.rs": "mod g; mod h;", "a/g.rs": "use super::h::Z;", "a/h.rs": "use super::g::Y;"}, ["a::g <-> a::h"]),
        # Test code does not count.
        ({"lib.rs": "", "a.rs": "use crate::b::X;", "b.rs": "#[cfg(test)]\nmod tests { use crate::a::Y; }"}, []),
        # "//" inside a string is not a comment.
        ({"lib.rs": "", "a.rs": 'const U: &str = "http://x"; use crate::b::X;', "b.rs": "use crate::a::Y;"}, ["a <-> b"]),
    ]
    failed = 0
    for files, want in cases:
        with tempfile.TemporaryDirectory() as crate:
            for name, text in files.items():
                path = os.path.join(crate, "src", name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(text + "\n")
            got = [names for names, _ in crate_cycles(crate)[1]]
        if got != want:
            failed += 1
            print(f"FAILED: {files}: found {got}, expected {want}")
    print(f"self-test: {len(cases) - failed}/{len(cases)} cases pass")
    return 1 if failed else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    crates = argv or sorted(
        os.path.join(top, d)
        for top in ("crates", "tools")
        if os.path.isdir(top)
        for d in os.listdir(top)
        if os.path.isdir(os.path.join(top, d, "src"))
    )
    bad = 0
    for crate in crates:
        count, found = crate_cycles(crate)
        if not found:
            print(f"{crate}: {count} modules, no cycles")
            continue
        bad += 1
        print(f"{crate}: {len(found)} cycle(s) among {count} modules")
        for names, proof in found:
            print(f"  {names}")
            print("\n".join(proof))
    if bad:
        print(
            "fix: move the shared type into a leaf module both sides use (ARCHITECTURE.md 2.4)",
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 1:
        os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    sys.exit(main(sys.argv[1:]))
