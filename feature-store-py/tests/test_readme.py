"""The README's Python block runs as pasted, in a fresh folder."""

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_block_runs_in_a_fresh_folder(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## From Python") :]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "quickstart.py"
    script.write_text(block, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    env = runpy.run_path(str(script), run_name="__main__")
    training = env["training_df"].sort_values("driver_id").reset_index(drop=True)
    assert [round(v, 6) for v in training["conv_rate"].tolist()] == [0.1, 0.6]
    assert training["avg_daily_trips"].tolist() == [10, 60]
    assert env["online"].to_dict()["conv_rate"][0] == 0.5
    # Everything it wrote is inside quickstart/.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quickstart", "quickstart.py"]
