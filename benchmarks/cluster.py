"""Issue 23's benchmark: the same retrieval on the local engine and on a
Ballista cluster of one scheduler and two executors on this machine, in one
run, alternating: wall time, peak memory of each process, and whether the
outputs are equal. Also: the retrieval written as a folder by the executors
(`--output DIR/`), and materialization of every view (the newest row per key
computed locally or on the executors; the online writes happen in the CLI
either way, into a fresh SQLite store each run). Bytes shuffled are the
cluster job's last `rows_shuffled=` and `bytes_shuffled=` progress figures on the CLI's stderr
(what Ballista 55 measures: exchange partitions fetched from another
executor, in-memory Arrow size; see the README's cluster section).

On one 2-core machine the cluster cannot be faster: the figure to report is
the overhead ratio (cluster / local)."""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import timed  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_mib(pid):
    """VmHWM of a live process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def shuffled(stderr):
    """(rows, bytes): the sum over the run's jobs of each job's last
    `rows_shuffled=` and `bytes_shuffled=` progress figures, or None."""
    import re
    last = {}
    for line in stderr.splitlines():
        rows = re.search(r"rows_shuffled=(\d+)", line)
        size = re.search(r"bytes_shuffled=(\d+)", line)
        job = re.search(r"job=([A-Za-z0-9]+)", line)
        if rows and size:
            last[job.group(1) if job else ""] = (int(rows.group(1)), int(size.group(1)))
    if not last:
        return None
    return sum(r for r, _ in last.values()), sum(b for _, b in last.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--executors", type=int, default=2)
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    subprocess.run([a.binary, "--repo", d, "apply"], check=True, stdout=subprocess.DEVNULL)
    features = ",".join(f"view_{v}" for v in range(a.views))
    base = [a.binary, "--repo", d, "historical", "--entities", f"{d}/data/entities.parquet", "--features", features]

    work = tempfile.mkdtemp(prefix="fs-cluster-")
    port = free_port()
    procs = []
    log = open(os.path.join(work, "cluster.log"), "w")
    try:
        procs.append(subprocess.Popen([a.binary, "cluster", "scheduler", "--port", str(port)], stdout=log, stderr=log))
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("the scheduler did not start; see " + log.name)
                time.sleep(0.2)
        cores = os.cpu_count() or 2
        for i in range(a.executors):
            wd = os.path.join(work, f"executor{i}")
            os.makedirs(wd)
            procs.append(subprocess.Popen(
                [a.binary, "cluster", "executor", "--scheduler", f"df://127.0.0.1:{port}", "--port", str(free_port()),
                 "--work-dir", wd, "--concurrent-tasks", str(max(1, cores // a.executors))],
                stdout=log, stderr=log))
        time.sleep(2)
        cluster = ["--engine", "ballista", "--scheduler", f"df://127.0.0.1:{port}"]
        runs = {"local": [], "cluster": []}
        rss = {"local": 0.0, "cluster": 0.0}
        shuffles = []
        for _ in range(a.repeat):
            for name, extra in (("local", []), ("cluster", cluster)):
                out = f"{d}/out_{name}.parquet"
                env_cmd = base + extra + ["--output", out]
                wall, peak, err, status = timed(env_cmd, timeout=3600)
                if status != 0:
                    sys.exit(f"{name} failed: {err.strip()[-400:]}")
                runs[name].append(wall)
                rss[name] = max(rss[name], peak)
                if name == "cluster":
                    shuffles.append(shuffled(err))
        import json
        import pyarrow as pa
        import pyarrow.parquet as pq
        local_table = pq.read_table(f"{d}/out_local.parquet")
        equal = local_table.equals(pq.read_table(f"{d}/out_cluster.parquet"))
        # The folder output, written by the executors.
        folder = f"{d}/out_folder/"
        folder_runs = []
        for _ in range(a.repeat):
            wall, peak, err, status = timed(base + cluster + ["--output", folder], timeout=3600)
            if status != 0:
                sys.exit(f"folder output failed: {err.strip()[-400:]}")
            folder_runs.append(wall)
        with open(folder + "_manifest.json") as f:
            manifest = json.load(f)
        parts = [pq.read_table(folder + m["file"]) for m in manifest["files"]]
        folder_equal = pa.concat_tables(parts).equals(local_table) if parts else local_table.num_rows == 0
        # Materialization of every view, into a fresh online store each run.
        mat = {"local": [], "cluster": []}
        for _ in range(a.repeat):
            for name, extra in (("local", []), ("cluster", cluster)):
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(f"{d}/data/online.db{suffix}"):
                        os.remove(f"{d}/data/online.db{suffix}")
                cmd = [a.binary, "--repo", d, "materialize", "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"] + extra
                wall, peak, err, status = timed(cmd, timeout=3600)
                if status != 0:
                    sys.exit(f"materialize ({name}) failed: {err.strip()[-400:]}")
                mat[name].append(wall)
        peaks = [peak_mib(p.pid) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v) for k, v in runs.items()}
    print(f"{a.rows:,} entity rows x {a.views} views; cluster: 1 scheduler + {a.executors} executors, "
          "hash partitions sized from the data (offline_store.partitions unset; the client's log has the count)")
    print(f"{'engine':<10} {'best s':>8} {'runs s':>24} {'client peak MiB':>16}")
    for k in ("local", "cluster"):
        print(f"{k:<10} {best[k]:>8.2f} {' '.join(f'{w:.2f}' for w in runs[k]):>24} {rss[k]:>16,.0f}")
    print(f"overhead ratio (cluster / local, best of {a.repeat}): {best['cluster'] / best['local']:.2f}x")
    print(f"peak RSS MiB: scheduler {peaks[0]:,.0f}, executors " + ", ".join(f"{p:,.0f}" for p in peaks[1:]))
    known = [s for s in shuffles if s is not None]
    print("shuffled per cluster run (rows, bytes fetched from another executor): "
          + (", ".join(f"{r:,} rows, {b:,} B" for r, b in known) if known else "not in the CLI's output"))
    print(f"outputs equal: {equal}")
    print(f"folder output by the executors: best {min(folder_runs):.2f} s ({' '.join(f'{w:.2f}' for w in folder_runs)}), "
          f"{len(manifest['files'])} files, rows equal to the local file: {folder_equal}")
    print(f"materialize (all views, fresh SQLite online store): local best {min(mat['local']):.2f} s, "
          f"cluster best {min(mat['cluster']):.2f} s, ratio {min(mat['cluster']) / min(mat['local']):.2f}x")


if __name__ == "__main__":
    main()
