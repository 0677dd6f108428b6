"""Every README python block marked <!-- tested --> runs; CI runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"<!-- tested -->\s*```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_tested_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), {"__name__": "readme"})


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "<!-- ci:test -->" in ci
    text = README.read_text()
    block = re.search(r"<!-- ci:test -->\s*```bash\n(.*?)```", text, re.S).group(1)
    assert "pytest" in block


def test_readme_shows_the_tested_minimal_agent_verbatim():
    example = (README.parent / "examples" / "minimal_agent.py").read_text()
    assert example in README.read_text()
    assert len(example.strip().splitlines()) <= 40
