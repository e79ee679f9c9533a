"""Every Python block in README.md and every example runs."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from ferrolimit import FakeClock

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{index}" for index in range(len(BLOCKS))])
def test_readme_block_runs(block: str) -> None:
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_quickstart_shows_a_burst_being_limited(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(ROOT / "examples" / "quickstart.py"))
    assert namespace["main"](FakeClock()) == [True] * 5 + [False] * 3
    output = capsys.readouterr().out
    assert "request 6: 429 Too Many Requests limit=5 remaining=0 retry_after=0.20s" in output
    assert "next request passes in 0.20s" in output


def test_quickstart_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, check=True
    )
    assert result.stdout.count("429 Too Many Requests") == 3
