"""`offline_store.memory_limit` from Python inside a real memory cgroup: a
notebook process given a limit is not killed by the kernel when the data
is larger than the cgroup, and gets the unlimited run's rows.

The cgroup (v2 `memory.max` or v1 `memory.limit_in_bytes`) is sized at the
limit plus the documented base (10% or 100 MiB, whichever is larger) plus
what the interpreter holds before any retrieval (Python, pyarrow and the
extension, measured here). Creating it needs root; elsewhere the test is
skipped with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_store as fs

MIB = 1 << 20
LIMIT = 48 * MIB
BASE = max(LIMIT // 10, 100 * MIB)


def make_cgroup(name: str, limit: int):
    v2_root, v1_root = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")
    controllers = (v2_root / "cgroup.controllers").read_text() if (v2_root / "cgroup.controllers").exists() else ""
    if "memory" in controllers.split():
        root, v2 = v2_root, True
    elif (v1_root / "memory.limit_in_bytes").exists():
        root, v2 = v1_root, False
    else:
        pytest.skip("neither cgroup v2 nor v1 has the memory controller mounted")
    path = root / f"feature-store-pytest-{name}-{os.getpid()}"
    try:
        path.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create {path} ({e}); the test needs root")
    try:
        if v2:
            (path / "memory.max").write_text(str(limit))
        else:
            (path / "memory.limit_in_bytes").write_text(str(limit))
            try:
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
            except OSError:
                pass
    except OSError as e:
        path.rmdir()
        pytest.skip(f"cannot set the limit of {path} ({e})")
    return path, v2


def oom_kills(path: Path, v2: bool) -> int:
    text = (path / ("memory.events" if v2 else "memory.oom_control")).read_text()
    for line in text.splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


SCRIPT = textwrap.dedent(
    """
    import os, sys
    import pyarrow.parquet as pq
    import feature_store as fs
    repo, out, limit = sys.argv[1], sys.argv[2], sys.argv[3]
    if out == "-":
        # The interpreter's own footprint before any retrieval.
        with open("/proc/self/status") as f:
            print(next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:")))
        sys.exit(0)
    config = {"project": "cg", "registry": "data/registry.json", "online_store": {"type": "sqlite", "path": "data/online.db"},
              "offline_store": {"memory_limit": limit}}
    store = fs.FeatureStore(repo_path=repo, config=config)
    entities = pq.read_table(os.path.join(repo, "entities.parquet"))
    rows = store.get_historical_features(entity_df=entities, features=["wide"]).to_parquet(out)
    print(rows)
    """
)


def write_repo(root: Path) -> Path:
    """1M feature rows of 60 float32 columns (~240 MB decoded, larger than the
    cgroup) over 20k keys; 50k entity rows."""
    rng = np.random.default_rng(7)
    (root / "data").mkdir(parents=True)
    n, keys = 1_000_000, 20_000
    t0 = np.datetime64("2026-01-01T00:00:00", "us")
    cols = {
        "driver_id": np.repeat(np.arange(keys, dtype=np.int64), n // keys),
        "event_timestamp": pa.array(t0 + rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC")),
    }
    for f in range(60):
        cols[f"f{f}"] = rng.random(n, dtype=np.float32)
    pq.write_table(pa.table(cols), root / "data" / "wide.parquet", row_group_size=64 * 1024)
    m = 50_000
    pq.write_table(
        pa.table(
            {
                "driver_id": rng.integers(0, keys + 100, m).astype(np.int64),
                "event_timestamp": pa.array(t0 + rng.integers(0, 2 * 86_400_000_000, m).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC")),
            }
        ),
        root / "entities.parquet",
    )
    (root / "feature_store.yaml").write_text("project: cg\nregistry: data/registry.json\n")
    features = ", ".join(f"{{name: f{f}, dtype: float32}}" for f in range(60))
    (root / "features.yaml").write_text(
        "entities:\n  - {name: driver, join_keys: [driver_id]}\n"
        "sources:\n  - {name: wide_src, path: data/wide.parquet, timestamp_field: event_timestamp}\n"
        f"feature_views:\n  - {{name: wide, entities: [driver], source: wide_src, schema: [{features}]}}\n"
    )
    return root


def test_memory_limit_holds_inside_a_cgroup(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("creating a memory cgroup needs root")
    repo = write_repo(tmp_path / "repo")
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply()
    free = tmp_path / "free.parquet"
    entities = pq.read_table(repo / "entities.parquet")
    store.get_historical_features(entity_df=entities, features=["wide"]).to_parquet(free)

    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    baseline = int(subprocess.run([sys.executable, str(script), str(repo), "-", "-"], check=True, capture_output=True, text=True, env=env).stdout)
    cgroup, v2 = make_cgroup("py", LIMIT + BASE + baseline)
    try:
        limited = tmp_path / "limited.parquet"
        # The page cache of the files just written is charged to this process's cgroup, not the test's one.
        out = subprocess.run(
            ["sh", "-c", f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"', "sh", sys.executable, str(script), str(repo), str(limited), f"{LIMIT // MIB}MiB"],
            capture_output=True,
            text=True,
            env=env,
        )
        kills = oom_kills(cgroup, v2)
        assert kills == 0, f"the OOM killer struck ({kills}): {out.stderr[-2000:]}"
        assert out.returncode == 0, out.stderr[-2000:]
        assert int(out.stdout.strip()) == entities.num_rows
        assert pq.read_table(limited).equals(pq.read_table(free))
        print(f"interpreter baseline {baseline // MIB} MiB, cgroup {(LIMIT + BASE + baseline) // MIB} MiB")
    finally:
        try:
            cgroup.rmdir()
        except OSError:
            pass
