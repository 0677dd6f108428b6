"""The python blocks of docs/own_agent.md marked <!-- tested --> run, in order, in one namespace
(the page builds its example step by step)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_agent.md"
BLOCKS = re.findall(r"<!-- tested -->\s*```python\n(.*?)```", DOC.read_text(), re.S)


def test_own_agent_page_has_tested_examples():
    assert len(BLOCKS) >= 5


def test_own_agent_page_runs_in_order(capsys):
    namespace = {"__name__": "own_agent_doc"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the page never steps without log π
        for i, block in enumerate(BLOCKS):
            exec(compile(block, f"docs/own_agent.md block {i}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "'prompt_tokens': 8" in out and "refused: no log π was supplied" in out
    first, last = namespace["history"][0], namespace["history"][-1]
    assert last > first  # the agent learned (vowel fraction up)
