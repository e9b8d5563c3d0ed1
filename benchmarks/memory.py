"""Issue 25's benchmark: the point-in-time join under memory limits, each run
inside a memory cgroup of limit + base, beside DuckDB at the same limit in
the same cgroup and DuckDB unlimited.

Prints per run: wall time, peak RSS (the process's own high-water mark), the
cgroup's peak charge (page cache included), how often the cgroup hit its
limit, whether the OOM killer struck, and for this project the bytes spilled.

Needs root and a memory cgroup (v1 `memory.limit_in_bytes` or v2
`memory.max`); without them it says so and runs nothing limited.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import DUCKDB  # noqa: E402  (the same chained ASOF query as run.py)

MIB = 1 << 20


def parse_size(text):
    m = re.fullmatch(r"(\d+)\s*(B|KiB|MiB|GiB)?", text.strip())
    if not m:
        raise SystemExit(f"not a size: {text!r} (use e.g. 512MiB or 1GiB)")
    return int(m.group(1)) * {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]


def base(limit):
    """The documented allowance above the limit: 10 % or 100 MiB, whichever is larger."""
    return max(limit // 10, 100 * MIB)


class Cgroup:
    """A memory cgroup made for one run and removed after it."""

    def __init__(self, name, limit):
        v2 = "/sys/fs/cgroup"
        v1 = "/sys/fs/cgroup/memory"
        controllers = os.path.join(v2, "cgroup.controllers")
        if os.path.exists(controllers) and "memory" in open(controllers).read().split():
            self.v2 = True
            self.path = os.path.join(v2, name)
        elif os.path.exists(os.path.join(v1, "memory.limit_in_bytes")):
            self.v2 = False
            self.path = os.path.join(v1, name)
        else:
            raise OSError("no memory cgroup controller (neither v2 nor v1 is mounted with memory)")
        os.makedirs(self.path, exist_ok=True)
        if self.v2:
            self._write("memory.max", limit)
            try:
                self._write("memory.swap.max", 0)
            except OSError:
                pass
        else:
            self._write("memory.limit_in_bytes", limit)
            try:
                self._write("memory.memsw.limit_in_bytes", limit)
            except OSError:
                pass  # no swap accounting: the machine has no swap to fall back on either

    def _write(self, file, value):
        with open(os.path.join(self.path, file), "w") as f:
            f.write(str(value))

    def _read(self, file):
        with open(os.path.join(self.path, file)) as f:
            return f.read()

    def prefix(self):
        """A command prefix that moves the process into this cgroup, then runs the command."""
        procs = os.path.join(self.path, "cgroup.procs")
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"]

    def stats(self):
        if self.v2:
            events = dict(line.split() for line in self._read("memory.events").splitlines())
            peak = int(self._read("memory.peak")) if os.path.exists(os.path.join(self.path, "memory.peak")) else None
            return {"peak": peak, "limit_hits": int(events.get("max", 0)), "oom_kills": int(events.get("oom_kill", 0))}
        oom = dict(line.split() for line in self._read("memory.oom_control").splitlines())
        return {
            "peak": int(self._read("memory.max_usage_in_bytes")),
            # With swap accounting the memsw counter is the one that trips.
            "limit_hits": max(int(self._read(f)) for f in ("memory.failcnt", "memory.memsw.failcnt")
                              if os.path.exists(os.path.join(self.path, f))),
            "oom_kills": int(oom.get("oom_kill", 0)),
        }

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


def run(cmd, cgroup=None, env=None, timeout=1800):
    """Wall time, rusage (peak RSS), stderr and exit status (negative: the signal) of one process."""
    full = (cgroup.prefix() if cgroup else []) + cmd
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=errf, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, rusage = os.wait4(proc.pid, 0)
        timer.cancel()
        wall = time.perf_counter() - start
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return wall, rusage, err, code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--limits", default="512MiB,1GiB,2GiB")
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma-separated: duckdb,unlimited")
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    subprocess.run([a.binary, "--repo", d, "apply"], check=True, stdout=subprocess.DEVNULL)
    features = ",".join(f"view_{v}" for v in range(a.views))
    out = f"{d}/out_memory.parquet"
    rows = []

    def record(tool, limit, cgroup_bytes, wall, rusage, err, status, cg_stats, extra=""):
        ok = status == 0
        why = ""
        if not ok:
            why = f"killed by signal {-status}" if status < 0 else f"exit {status}"
            tail = err.strip().splitlines()[-1:] if err.strip() else []
            why += (": " + tail[0][:200]) if tail else ""
        rows.append({"tool": tool, "limit": limit, "wall": wall, "ok": ok})
        line = f"{tool:<26} limit {limit or '-':>7}  cgroup {cgroup_bytes // MIB if cgroup_bytes else '-':>5} MiB  "
        line += f"{wall:7.1f} s  cpu {rusage.ru_utime + rusage.ru_stime:6.1f} s  peak RSS {rusage.ru_maxrss / 1024:7.0f} MiB  "
        if cg_stats:
            peak = f"{cg_stats['peak'] // MIB}" if cg_stats.get("peak") else "?"
            line += f"cgroup peak {peak:>5} MiB  limit hits {cg_stats['limit_hits']:>8}  OOM kills {cg_stats['oom_kills']}  "
        line += "ok" if ok else why
        if extra:
            line += f"  {extra}"
        print(line, flush=True)

    if "unlimited" not in a.skip:
        if "duckdb" not in a.skip:
            wall, ru, err, status = run([sys.executable, "-c", DUCKDB, d, str(a.views), f"{d}/out_duckdb.parquet"])
            record("duckdb ASOF, no limit", None, None, wall, ru, err, status, None)
        cmd = [a.binary, "--repo", d, "historical", "--entities", f"{d}/data/entities.parquet",
               "--features", features, "--output", out]
        wall, ru, err, status = run(cmd)
        record("feature-store, no limit", None, None, wall, ru, err, status, None)

    for text in [x for x in a.limits.split(",") if x]:
        limit = parse_size(text)
        cg_bytes = limit + base(limit)
        cmd = [a.binary, "--repo", d, "historical", "--entities", f"{d}/data/entities.parquet",
               "--features", features, "--output", out, "--memory-limit", text]
        env = dict(os.environ, RUST_LOG="feature_store=debug")
        try:
            cg = Cgroup(f"fs-bench-{os.getpid()}-ours", cg_bytes)
        except OSError as e:
            print(f"skipped the limited runs: {e}")
            break
        try:
            wall, ru, err, status = run(cmd, cg, env)
            spilled = sum(int(m) for m in re.findall(r"spilled_bytes=(\d+)", err))
            record("feature-store", text, cg_bytes, wall, ru, err, status, cg.stats(), f"spilled {spilled / MIB:.0f} MiB")
        finally:
            cg.remove()
        if "duckdb" not in a.skip:
            spill_dir = tempfile.mkdtemp(prefix="duckdb-spill-")
            duck = DUCKDB.replace("con = duckdb.connect()",
                                  f"con = duckdb.connect()\ncon.execute(\"SET memory_limit='{limit // MIB}MB'\")"
                                  f"\ncon.execute(\"SET temp_directory='{spill_dir}'\")")
            cg = Cgroup(f"fs-bench-{os.getpid()}-duck", cg_bytes)
            try:
                wall, ru, err, status = run([sys.executable, "-c", duck, d, str(a.views), f"{d}/out_duckdb_limited.parquet"], cg)
                record("duckdb ASOF, same limit", text, cg_bytes, wall, ru, err, status, cg.stats())
            finally:
                cg.remove()
                shutil.rmtree(spill_dir, ignore_errors=True)

    free = [r for r in rows if r["tool"] == "duckdb ASOF, no limit" and r["ok"]]
    print()
    for r in rows:
        if r["tool"] == "feature-store" and r["ok"]:
            same = [x for x in rows if x["tool"] == "duckdb ASOF, same limit" and x["limit"] == r["limit"] and x["ok"]]
            text = f"{r['limit']}: feature-store {r['wall']:.1f} s"
            if free:
                text += f", {r['wall'] / free[0]['wall']:.2f}x DuckDB unlimited"
            text += f", {r['wall'] / same[0]['wall']:.2f}x DuckDB at the same limit" if same else ", DuckDB at the same limit failed or was skipped"
            print(text)


if __name__ == "__main__":
    main()
