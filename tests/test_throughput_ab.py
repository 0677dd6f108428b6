"""benchmarks/throughput_ab.py: its summary and table from per-run results, and its refusal to
compare a checkout with itself (no benchmark runs here: speed is measured by the script)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ab():
    spec = importlib.util.spec_from_file_location(
        "throughput_ab", ROOT / "benchmarks/throughput_ab.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(s: float, b: float, d: float) -> dict:
    return {
        "tokens_per_s": {"s_sampler_model_work": s, "b_native_env": b, "d_naive_env": d},
        "ratios": {"b/s": b / s, "b/d": b / d},
        "others_cpu_share": 0.01,
    }


def test_summary_counts_the_runs_at_the_target(ab):
    runs = {
        "this": [run(100, 96, 20), run(100, 94, 20), run(100, 95, 19)],
        "base": [run(100, 90, 20)],
    }
    summary = ab.summarize(runs)
    assert summary["this"]["runs"] == 3 and summary["this"]["runs_at_target"] == 2
    assert summary["this"]["b/s"] == {"median": 0.95, "min": 0.94, "max": 0.96}
    assert summary["base"]["runs_at_target"] == 0
    table = ab.table(runs, {"this": {"commit": "abc"}, "base": {"commit": "def"}})
    assert table.splitlines()[2] == "| this (abc) | 1 | 100 | 96 | 20 | 0.96 | 4.80 | 1% |"
    assert len(table.splitlines()) == 2 + 4


def test_a_checkout_is_not_compared_with_itself(ab, tmp_path, monkeypatch):
    # Both versions resolve to one folder (as --base pointing at this checkout does when the
    # package is installed editable): refused before any benchmark runs.
    monkeypatch.setattr(ab, "imported_textenv", lambda env: str(ROOT / "textenv"))
    monkeypatch.setattr(ab, "run_once", lambda *a, **k: pytest.fail("a benchmark ran"))
    with pytest.raises(SystemExit, match="both versions import the same textenv"):
        ab.main(["--base", str(ROOT), "--runs", "1", "--out", str(tmp_path / "ab.json")])
