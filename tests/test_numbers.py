"""Every measured number in the READMEs sits in a span that names its results file, and agrees
with it (``benchmarks/render_readme.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import render_readme  # noqa: E402


def test_readme_numbers_agree_with_their_results_files():
    docs = [REPO / d for d in render_readme.DOCUMENTS]
    problems = render_readme.check(docs)
    assert not problems, "README numbers differ from their results files (run " + (
        "python benchmarks/render_readme.py):\n" + "\n".join(problems)
    )
    # The mechanism is in use: the READMEs do carry result spans.
    assert sum(len(render_readme.spans(d)) for d in docs) >= 10


def _doc(tmp_path: Path, body: str) -> Path:
    (tmp_path / "r.json").write_text(
        json.dumps({"a": {"b": [0.5, 0.25], "x.y": 3}, "speed": 1.734, "table": "| t |\n"})
    )
    doc = tmp_path / "README.md"
    doc.write_text(body)
    return doc


def test_check_finds_a_drifted_number_and_render_fixes_it(tmp_path):
    body = (
        "speed <!-- result:r.json:speed:.2f -->1.80<!-- /result -->×, "
        "gold <!-- result:r.json:a.b:pm.3f -->0.500 ± 0.250<!-- /result -->, "
        "n <!-- result:r.json:a[x.y] -->3<!-- /result -->\n"
        "<!-- result-block:r.json:table -->\nold\n<!-- /result-block -->\n"
    )
    doc = _doc(tmp_path, body)
    problems = render_readme.check([doc], root=tmp_path)
    assert len(problems) == 2
    assert "README.md:1" in problems[0] and "'1.80'" in problems[0] and "'1.73'" in problems[0]
    assert "table" in problems[1]
    fixed = render_readme.render(body, doc, root=tmp_path)
    doc.write_text(fixed)
    assert render_readme.check([doc], root=tmp_path) == []
    assert "-->1.73<!--" in fixed and "| t |\n<!-- /result-block -->" in fixed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.json:a", "missing.json does not exist"),
        ("r.json:a.c", "has no 'a.c'"),
        ("r.json", "FILE:PATH"),
        ("r.json:a.b:.2f", "cannot format"),
    ],
)
def test_bad_spans_are_named_with_file_and_line(tmp_path, spec, message):
    doc = _doc(tmp_path, f"x\n<!-- result:{spec} -->1<!-- /result -->\n")
    with pytest.raises(render_readme.ResultSpanError, match="README.md:2") as err:
        render_readme.check([doc], root=tmp_path)
    assert message in str(err.value)
