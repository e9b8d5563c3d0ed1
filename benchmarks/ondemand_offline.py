"""Training with on-demand features: workload 1 alone against workload 1 plus
one on-demand view of five expressions over two of its views, run alternately.

usage: ondemand_offline.py DIR --binary target/release/feature-store [--repeat 5]
(DIR from generate.py; writes DIR/ondemand.yaml beside its features.yaml)
"""
import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import timed  # noqa: E402

ON_DEMAND = """on_demand_feature_views:
  - name: od_bench
    sources: [view_0, view_1]
    features:
      - {name: product, dtype: float64, expression: "v0_f0 * v1_f0"}
      - {name: spread, dtype: float64, expression: "v0_f1 + v0_f2 - v1_f1"}
      - {name: high, dtype: int64, expression: "CASE WHEN v0_f3 > 0.5 THEN 1 ELSE 0 END"}
      - {name: norm, dtype: float64, expression: "sqrt(v0_f4 * v0_f4 + v1_f4 * v1_f4)"}
      - {name: ratio, dtype: float64, expression: "COALESCE(v1_f5, 0) / NULLIF(v0_f5, 0)"}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    with open(os.path.join(d, "ondemand.yaml"), "w") as f:
        f.write(ON_DEMAND)
    subprocess.run([a.binary, "--repo", d, "apply"], check=True, stdout=subprocess.DEVNULL)
    views = ",".join(f"view_{v}" for v in range(a.views))
    base = [a.binary, "--repo", d, "historical", "--entities", f"{d}/data/entities.parquet", "--output"]
    runs = {
        "workload 1": base + [f"{d}/out_plain.parquet", "--features", views],
        "workload 1 + on-demand view": base + [f"{d}/out_od.parquet", "--features", views + ",od_bench"],
    }
    walls = {k: [] for k in runs}
    for i in range(a.repeat):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for name in order:
            wall, rss, err, status = timed(runs[name])
            if status != 0:
                sys.exit(f"{name} failed: {err.strip()[-400:]}")
            walls[name].append(wall)
    plain = min(walls["workload 1"])
    print(f"{'run':<30} {'best s':>8} {'median s':>9} {'best / plain':>13}")
    for name, w in walls.items():
        print(f"{name:<30} {min(w):>8.2f} {statistics.median(w):>9.2f} {min(w) / plain:>13.3f}")


if __name__ == "__main__":
    main()
