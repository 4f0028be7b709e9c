"""The README's Python examples run as written (the training budget cut to one rollout)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may save files
    code = BLOCKS[index].replace("300_000", "2048").replace("progress_bar=True", "progress_bar=False")
    exec(compile(code, f"README.md python block {index}", "exec"), {})
