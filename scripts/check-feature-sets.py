#!/usr/bin/env python3
"""Fails when a third-party crate would be compiled with other features for
the CLI (`cargo build -p feature-store-cli`, what scripts/demo.sh builds) than
for the whole workspace (`cargo build --workspace --all-targets`, what
scripts/test.sh builds): such a crate, and everything above it, would be
compiled twice. Only the workspace's own crates may differ (the `testing`
feature of the conformance suites)."""
import subprocess
import sys


def features(args):
    out = subprocess.run(
        ["cargo", "tree", "--locked", "--prefix", "none", "-f", "{p} {f}", *args],
        check=True, capture_output=True, text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        parts = line.replace(" (*)", "").split(" ", 2)
        if len(parts) < 2:
            continue
        rest = parts[2] if len(parts) == 3 else ""
        if rest.startswith("("):  # a path dependency: "(/path) features"
            rest = rest.split(")", 1)[1].strip() if ")" in rest else ""
            continue  # the workspace's own crates
        found[(parts[0], parts[1])] = rest
    return found


cli = features(["-p", "feature-store-cli", "-e", "normal,build"])
workspace = features(["--workspace", "-e", "normal,build,dev"])
differ = [(k, f, workspace[k]) for k, f in cli.items() if k in workspace and workspace[k] != f]
for (name, version), a, b in differ:
    print(f"{name} {version}: CLI build features [{a}], workspace build features [{b}]", file=sys.stderr)
if differ:
    print("align them in [workspace.dependencies] so the demo and the tests share one build", file=sys.stderr)
    sys.exit(1)
print(f"one feature set for {len(cli)} third-party crates of the CLI build and the workspace build")
