"""The Python example runs as documented."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python" / "quickstart.py"


def test_quickstart_example_runs(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "repo")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "materialized 5 entities" in out.stdout
    assert "'NOT_FOUND'" in out.stdout
