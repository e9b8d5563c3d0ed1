#!/usr/bin/env python3
"""Fails when the top-level modules of feature-store-core import each other in
a loop. The intended layering, lowest first: value_type, duration, error ->
model -> historical -> offline (the store contract and its types) ->
quality, repo -> dataset -> registry -> facade (every FeatureStore method);
online beside offline; testing on top. Only code counts: comments and
`#[cfg(test)] mod tests` are skipped."""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "feature-store-core", "src")
TOP = ["model", "repo", "registry", "offline", "online", "quality", "dataset", "historical",
       "facade", "testing", "value_type", "duration", "error"]

# Items the crate root re-exports from the facade (`crate::FeatureStore`)
# count as imports of the facade.
lib = open(os.path.join(ROOT, "lib.rs"), encoding="utf-8").read()
FACADE_ITEMS = set()
for group in re.findall(r"pub use facade::([^;]*);", lib, re.S):
    FACADE_ITEMS |= set(re.findall(r"\b([A-Z]\w*)\b", group))

deps = collections.defaultdict(lambda: collections.defaultdict(set))
for root, _, files in os.walk(ROOT):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(root, name)
        module = os.path.relpath(path, ROOT).split(os.sep)[0].removesuffix(".rs")
        if module not in TOP:
            continue
        text = open(path, encoding="utf-8").read()
        cut = text.find("#[cfg(test)]\nmod tests")
        if cut >= 0:
            text = text[:cut]
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        used = set(re.findall(r"crate::(\w+)", code))
        for group in re.findall(r"use crate::\{([^}]*)\}", code, re.S):
            used |= set(re.findall(r"\b(\w+)\b", group))
        if used & FACADE_ITEMS:
            used.add("facade")
        for target in used & set(TOP) - {module}:
            deps[module][target].add(os.path.relpath(path, ROOT))

cycles = set()


def walk(node, path):
    for target in deps[node]:
        if target in path:
            cycle = path[path.index(target):]
            start = cycle.index(min(cycle))
            cycles.add(tuple(cycle[start:] + cycle[:start]))
            continue
        walk(target, path + [target])


for module in list(deps):
    walk(module, [module])
for cycle in sorted(cycles):
    links = " -> ".join(cycle + (cycle[0],))
    files = ", ".join(sorted(deps[cycle[0]][cycle[1 % len(cycle)]]))
    print(f"import loop: {links} (first link in {files})", file=sys.stderr)
if cycles:
    sys.exit(1)
print(f"feature-store-core: {len(deps)} top-level modules import each other without loops")
