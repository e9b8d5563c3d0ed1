"""Runs the point-in-time join on the same files with this project, DuckDB
(ASOF LEFT JOIN, one per view, chained) and Polars (join_asof by key), each in
its own process; prints wall time, rows/s, peak RSS and ratios to this project.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

DUCKDB = r'''
import duckdb, sys, os
d, views, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con = duckdb.connect()
q = "SELECT e.*"
for v in range(views):
    q += f", v{v}.* EXCLUDE (driver_id, event_timestamp)"
q += f" FROM read_parquet('{d}/data/entities.parquet') e"
for v in range(views):
    q += f" ASOF LEFT JOIN read_parquet('{d}/data/view_{v}.parquet') v{v} ON e.driver_id = v{v}.driver_id AND e.event_timestamp >= v{v}.event_timestamp"
con.execute(f"COPY ({q}) TO '{out}' (FORMAT parquet)")
'''

POLARS = r'''
import polars as pl, sys
d, views, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
e = pl.read_parquet(f"{d}/data/entities.parquet").sort("event_timestamp")
for v in range(views):
    f = pl.read_parquet(f"{d}/data/view_{v}.parquet").sort("event_timestamp")
    e = e.join_asof(f, on="event_timestamp", by="driver_id", strategy="backward")
e.write_parquet(out)
'''


def timed(cmd, cwd=None, timeout=600):
    """Wall time and peak RSS of one process; killed after `timeout` seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errf)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, rusage = os.wait4(proc.pid, 0)
        timer.cancel()
        wall = time.perf_counter() - start
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    if wall >= timeout:
        err += f"\nerror: killed after {timeout} s"
    elif status != 0:
        err += f"\nerror: exit status {status}"
    return wall, rusage.ru_maxrss / 1024, err, status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--memory-limit")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is reported (the machine is shared)")
    ap.add_argument("--feast-python", help="python of a venv with feast installed; adds Feast's file offline store (one run, 10 min cap)")
    ap.add_argument("--skip", default="", help="comma-separated tools to leave out: duckdb,polars")
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    subprocess.run([a.binary, "--repo", d, "apply"], check=True, stdout=subprocess.DEVNULL)
    features = ",".join(f"view_{v}" for v in range(a.views))
    ours = [a.binary, "--repo", d, "historical", "--entities", f"{d}/data/entities.parquet",
            "--features", features, "--output", f"{d}/out_ours.parquet"]
    if a.memory_limit:
        ours += ["--memory-limit", a.memory_limit]
    runs = [("feature-store", ours, a.repeat)]
    if "duckdb" not in a.skip:
        runs.append(("duckdb ASOF", [sys.executable, "-c", DUCKDB, d, str(a.views), f"{d}/out_duckdb.parquet"], a.repeat))
    if "polars" not in a.skip:
        runs.append(("polars join_asof", [sys.executable, "-c", POLARS, d, str(a.views), f"{d}/out_polars.parquet"], a.repeat))
    if a.feast_python:
        runs.append(("feast 0.67 file", [a.feast_python, os.path.join(HERE, "feast_run.py"), d, str(a.views), "10", f"{d}/out_feast.parquet"], 1))
    results = []
    for name, cmd, repeat in runs:
        walls, rsss, ok = [], [], "ok"
        for _ in range(repeat):
            wall, rss, err, status = timed(cmd)
            walls.append(wall)
            rsss.append(rss)
            notes = [line for line in err.splitlines() if "rows out" in line]
            if notes:
                ok = notes[-1].strip()
            if status != 0 or "error:" in err.lower():
                ok = "FAILED: " + err.strip().splitlines()[-1][:120]
        walls.sort()
        results.append((name, walls[0], walls[len(walls) // 2], max(rsss), ok))
    base = results[0][1]
    print(f"{'tool':<18} {'best s':>8} {'median s':>9} {'rows/s':>12} {'peak RSS MiB':>13} {'best / ours':>12}  status")
    for name, best, median, rss, ok in results:
        print(f"{name:<18} {best:>8.2f} {median:>9.2f} {a.rows / best:>12,.0f} {rss:>13,.0f} {best / base:>12.2f}  {ok}")


if __name__ == "__main__":
    main()
