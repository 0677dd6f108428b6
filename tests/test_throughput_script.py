"""The throughput benchmark runs end to end on a tiny batch and writes its results (no timing
assertions: speed is measured by the script, not by tests)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture
def throughput():
    """benchmarks/throughput.py, loaded as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_script_writes_every_variant(tmp_path, throughput):
    out = tmp_path / "throughput.json"
    throughput.main(
        ["--batch", "2", "--repeats", "1", "--wait-quiet", "0", "--clock", "cpu", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["clock"] == "cpu"
    assert set(row["tokens_per_s"]) == {
        "a_generate", "o_model_work", "s_sampler_model_work", "b_native_env", "c_single_envs",
        "d_naive_env", "f_native_env_fused_rm", "t_native_env_text_rm",
    }  # fmt: skip
    assert all(v > 0 for v in row["tokens_per_s"].values())
    assert {"b/o", "b/s", "b/t", "b/a", "b/c", "b/d", "f/a"} <= set(row["ratios"])
    assert out.with_suffix(".md").read_text().startswith("| B |")


def test_scaling_mode_writes_curves(tmp_path, throughput):
    out = tmp_path / "scaling.json"
    throughput.main(
        ["--scaling", "--batch", "2", "--lengths", "4", "8", "--repeats", "1", "--wait-quiet", "0",
         "--out", str(out)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["batch"], r["new_tokens"]) for r in rows] == [(2, 4), (2, 8)]
    table = result["table_md"].splitlines()
    assert table[0] == "| new tokens | B=2: tok/s, µs/token, peak RSS MiB |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| 4", "| 8"]
    assert all(r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in rows)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_env_only_mode_times_the_envs_own_work(tmp_path, throughput):
    out = tmp_path / "env_only.json"
    throughput.main(["--env-only", "--batch", "2", "--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["batch"] == 2 and result["repeats"] == 20  # at least 20, whatever is asked
    ms = result["ms_per_rollout"]
    assert set(ms) == {"reset", "logprob_checks", "steps", "last_step"}
    assert all(v > 0 for v in ms.values())


def test_in_loop_mode_times_the_envs_calls_between_policy_steps(tmp_path, throughput):
    out = tmp_path / "in_loop.json"
    throughput.main(
        ["--in-loop", "--batch", "2", "--repeats", "1", "--wait-quiet", "0", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    assert result["batch"] == 2 and result["steps_timed"] == 31
    assert set(result["medians"]) == {
        "policy_ms_without_env", "policy_ms_with_env",
        "env_us_per_step_after_policy", "env_us_per_step_after_env",
        "policy_ms_with_floor_env", "floor_env_us_per_step_after_policy",
        "policy_ms_with_checked_floor_env", "checked_floor_env_us_per_step_after_policy",
    }  # fmt: skip
    assert all(len(v) == 10 for v in result["runs"].values())  # at least 10 repeats
    assert all(v > 0 for v in result["medians"].values())


def test_split_mode_times_both_rollouts_phase_by_phase(tmp_path, throughput):
    out = tmp_path / "split.json"
    throughput.main(
        ["--split", "--batch", "2", "--repeats", "1", "--wait-quiet", "0", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    assert result["batch"] == 2 and result["repeats"] == 10  # at least 10 repeats
    ms = result["ms_per_rollout"]
    assert set(ms["s"]) == {"policy", "model passes", "total"}
    assert set(ms["b"]) == {"reset", "policy", "env steps", "last step", "total"}
    for runs in result["runs"].values():  # each rollout's phases add up to it
        assert len(runs) == 10
        for phases in runs:
            total = sum(v for k, v in phases.items() if k != "total")
            assert total == pytest.approx(phases["total"])
    assert result["b/s"] == pytest.approx(ms["s"]["total"] / ms["b"]["total"])
    assert result["b_minus_s_ms"]["total"] == pytest.approx(ms["b"]["total"] - ms["s"]["total"])
    assert result["table_md"].startswith("| phase |")


def test_floor_env_checks_what_the_package_checks(throughput):
    """The checked floor env refuses what the package's env refuses (its cost is then a fair
    floor for a step with the checks)."""
    import numpy as np

    env = throughput.FloorEnv(2, checks=True)
    env.reset()
    with pytest.raises(ValueError, match="log π"):
        env.set_action_logprobs(np.array([-0.5, np.nan]))
    with pytest.raises(ValueError, match="log π"):
        env.set_action_logprobs(np.array([-0.5, 0.1]))
    env.set_action_logprobs(np.array([-0.5, -1.0], dtype=np.float32))
    with pytest.raises(ValueError, match="vocabulary"):
        env.step(np.array([3, -1]))
    with pytest.raises(ValueError, match="vocabulary"):
        env.step(np.array([3, 512]))
    obs, rewards, terminated, truncated, info = env.step(np.array([3, 4]))
    assert obs["input_ids"][:, throughput.P].tolist() == [3, 4]
    assert obs["attention_mask"][:, throughput.P].tolist() == [1, 1]
    assert not terminated.any() and not truncated.any() and rewards.tolist() == [0.0, 0.0]
