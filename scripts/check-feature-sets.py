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
        # A crate can be built twice in one build (for build scripts on the
        # host and for the target), with different features: keep each set.
        found.setdefault((parts[0], parts[1]), set()).add(rest)
    return found


cli = features(["-p", "feature-store-cli", "-e", "normal,build"])
workspace = features(["--workspace", "-e", "normal,build,dev"])
# Every way the CLI build compiles a crate, the workspace build compiles too.
differ = [(k, f, workspace[k]) for k, f in cli.items() if k in workspace and not f <= workspace[k]]
for (name, version), a, b in differ:
    show = lambda sets: " | ".join(f"[{x}]" for x in sorted(sets))
    print(f"{name} {version}: CLI build features {show(a)}, workspace build features {show(b)}", file=sys.stderr)
if differ:
    print("align them in [workspace.dependencies] so the demo and the tests share one build", file=sys.stderr)
    sys.exit(1)
print(f"one feature set for {len(cli)} third-party crates of the CLI build and the workspace build")
