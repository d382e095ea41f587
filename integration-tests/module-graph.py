#!/usr/bin/env python3
"""Fails when the daemon's modules import each other in a circle (issue 16).

An equivalent of `cargo modules dependencies --acyclic` (the cargo-modules crate builds
rust-analyzer, about ten minutes cold on CI's two cores), reading the sources directly:

- A module is a file of daemon/src (`boot/steps.rs` is `boot::steps`, `boot/mod.rs` is
  `boot`), without its tests (`tests.rs`, and a trailing `#[cfg(test)] mod tests { ... }`)
  and without the binaries (daemon/src/bin), which nothing imports.
- A module depends on another when it names it, or an item in it, through a `crate::`,
  `super::` or `self::` path (in `use` declarations, `use` groups and expressions alike).
  A parent naming its own children (`mod steps;` then `steps::run`) is how Rust nests modules
  and is not counted; a child naming its parent (`super::StepError`) is.
- Two graphs must be free of circles: the top-level modules (`config`, `components`, ...,
  each with everything below it), and the files.

Usage: module-graph.py [SRC_DIR]   (default daemon/src); --self-test checks the checker on
made-up trees, one with a circle and one without.
Prints each circle with the files that make its edges; exit 1 if there is one.
"""
import collections
import os
import re
import sys
import tempfile

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z_0-9]*)+)")
GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z_0-9]*)*)::\{([^}]*)\}")
TESTS_BLOCK = re.compile(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*", re.S)
COMMENT = re.compile(r"//[^\n]*")


def modules(src):
    """{module path: source text} for every file of the crate but tests and binaries."""
    found = {}
    for directory, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(directory, name), src)
            if rel.startswith("bin" + os.sep) or rel in ("lib.rs", "main.rs"):
                continue
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts[-1] == "tests":
                continue
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                text = f.read()
            found["::".join(parts)] = COMMENT.sub("", TESTS_BLOCK.sub("", text))
    return found


def edges(found):
    """{(from, to): [the path that made it]}, parents naming their children left out."""
    names = set(found)

    def resolve(parts):
        for n in range(len(parts), 0, -1):
            candidate = "::".join(parts[:n])
            if candidate in names:
                return candidate
        return None

    def base(me, kind, rest):
        parts = me.split("::")
        if kind == "crate":
            return [], rest
        if kind == "self":
            return parts, rest
        parts = parts[:-1]
        while rest[:1] == ["super"]:
            parts, rest = parts[:-1], rest[1:]
        return parts, rest

    made = collections.defaultdict(list)
    for me, text in found.items():
        targets = []
        for match in PATH.finditer(text):
            start, rest = base(me, match.group(1), match.group(2)[2:].split("::"))
            targets.append((start + rest, match.group(0)))
        for match in GROUP.finditer(text):
            prefix = [p for p in match.group(2).split("::") if p]
            start, rest = base(me, match.group(1), prefix)
            for item in match.group(3).split(","):
                item = item.strip().split(" as ")[0].strip("{ ")
                if item and item != "self":
                    targets.append((start + rest + item.split("::"), match.group(0)))
        for parts, text_seen in targets:
            target = resolve(parts)
            if target is None or target == me or target.startswith(me + "::"):
                continue  # itself, or its own child
            made[(me, target)].append(text_seen)
    return made


def circles(graph):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def check(src, out=print):
    found = modules(src)
    made = edges(found)
    files = collections.defaultdict(set)
    tops = collections.defaultdict(set)
    top_why = collections.defaultdict(set)
    for (a, b), seen in made.items():
        files[a].add(b)
        ta, tb = a.split("::")[0], b.split("::")[0]
        if ta != tb:
            tops[ta].add(tb)
            top_why[(ta, tb)].add(f"{a} names {seen[0]}")
    problems = 0
    for level, graph, why in (
        ("top-level modules", tops, lambda a, b: sorted(top_why[(a, b)])[:3]),
        ("files", files, lambda a, b: made[(a, b)][:3]),
    ):
        for component in circles(graph):
            problems += 1
            out(f"CIRCLE among the {level}: {' <-> '.join(component)}")
            for a in component:
                for b in sorted(graph[a]):
                    if b in component:
                        out(f"  {a} -> {b}: {', '.join(why(a, b))}")
    out(
        f"module graph of {src}: {len(found)} modules, {len(made)} edges, "
        f"{len(tops)} top-level modules with imports; {problems} circle(s)"
    )
    return problems


def self_test():
    def tree(files):
        root = tempfile.mkdtemp()
        for rel, text in files.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return root

    quiet = lambda *_: None  # noqa: E731
    ring = tree({
        "config/mod.rs": "mod rules;\npub const X: &str = crate::components::VG;\n",
        "config/rules.rs": "use super::X;\n",
        "components/mod.rs": "pub const VG: &str = \"pangeo\";\nuse crate::{config::Config};\n",
        "boot/mod.rs": "mod steps;\nmod preflight;\npub struct E;\nfn go() { steps::run(); }\n",
        "boot/steps.rs": "use super::preflight;\n",
        "boot/preflight.rs": "use super::steps::Ctx;\nuse super::E;\n",
    })
    tidy = tree({
        "config/mod.rs": "pub mod defaults;\nmod rules;\nuse rules::x;\n",
        "config/defaults.rs": "pub const VG: &str = \"pangeo\";\n",
        "config/rules.rs": "use super::defaults::VG;\n// crate::components::VG in a comment\n",
        "components/mod.rs": "pub const VG: &str = crate::config::defaults::VG;\nmod drift;\n",
        "components/drift.rs": "use super::VG;\n#[cfg(test)]\nmod tests {\n    use crate::boot::E;\n}\n",
        "boot/mod.rs": "pub struct E;\nuse crate::components::VG;\n",
    })
    got_ring, got_tidy = check(ring, quiet), check(tidy, quiet)
    # config<->components among the top-level modules and among the files; steps<->preflight
    assert got_ring == 3, f"expected 3 circles, found {got_ring}"
    assert got_tidy == 0, f"expected no circle, found {got_tidy}"
    print("module-graph self-test: a tree with three circles gives 3, a tree without gives 0")


def main(argv):
    if "--self-test" in argv:
        self_test()
        return 0
    src = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "daemon", "src")
    return 1 if check(os.path.normpath(src)) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
