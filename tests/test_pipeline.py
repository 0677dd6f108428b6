"""`textenv run`: the whole loop end to end on a tiny budget; seeded; resumable; and what it
claims to learn, each claim against a control that must fail it.

* The reward model beats chance on fresh held-out pairs (eval-split prompts, labelled like the
  training pairs), by more than RM_MARGIN; the same training on label-shuffled pairs does not.
  Measured on the Sort task's quick run: 0.755 on 636 held-out pairs, the control 0.506.
* The proxy reward rises by more than two standard errors over the RL stage.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from textenv import pipeline
from textenv.pipeline import RunConfig, run
from textenv.preferences import (
    PreferencePair,
    read_preferences,
)
from textenv.training.bradley_terry import RewardModelConfig
from textenv.training.reward_model import evaluate_reward, train_reward

RM_MARGIN = 0.10  # held-out pair accuracy above chance (0.5)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "a"
    summaries = run(RunConfig.quick(), run_dir)  # exactly `textenv run --quick`
    return run_dir, summaries


@pytest.fixture(scope="module")
def sort_run(finished_run):
    """`textenv run --quick` is `textenv run --quick --task sort` (about 10 s)."""
    run_dir, summaries = finished_run
    config = RunConfig.quick()
    assert config == RunConfig.quick(task="sort")
    return config, run_dir, summaries


def held_out_pairs(config: RunConfig) -> list[PreferencePair]:
    """Pairs the RM never saw: reference samples on eval-split prompts, labelled like the run's."""
    rows = pipeline._sample_reference(config, seed=config.seed + 7, split="eval", n_prompts=128)
    labeller = pipeline._labeller(config, seed=config.seed + 7)
    return labeller.label_samples(rows).items


def test_quick_run_reward_model_beats_chance_and_a_shuffled_label_control_does_not(
    sort_run, tmp_path
):
    config, run_dir, summaries = sort_run
    held = held_out_pairs(config)
    assert len(held) > 300
    real = evaluate_reward(str(run_dir / "reward_model" / "rm"), held)["accuracy"]
    # The control: the run's own training pairs, half of them with chosen and rejected swapped.
    rng = np.random.default_rng(0)
    pairs = list(read_preferences(run_dir / "preferences" / "preferences.jsonl"))
    shuffled = [
        PreferencePair(p.prompt, p.rejected, p.chosen, p.margin, p.metadata)
        if rng.random() < 0.5
        else p
        for p in pairs
    ]
    task = pipeline._task(config)
    rm_config = RewardModelConfig(
        kind=config.rm, backbone=task["reference"], epochs=config.rm_epochs, seed=config.seed
    )
    train_reward(shuffled, tmp_path / "control_rm", rm_config)
    control = evaluate_reward(str(tmp_path / "control_rm"), held)["accuracy"]
    print(f"held-out pair accuracy: RM {real:.3f}, shuffled-label control {control:.3f}")
    assert real > 0.5 + RM_MARGIN, real
    assert not control > 0.5 + RM_MARGIN, control


def test_quick_sentiment_run_is_only_a_smoke_test_so_quick_defaults_to_sort():
    """Sentiment-v0's ~190 VADER-labelled pairs of a quick run teach an RM at chance (measured
    0.40 on 25 held-out pairs, 0.49 on 308 fresh ones), so `--quick` runs Sort-v0 by default."""
    assert RunConfig.quick().task == "sort"
    assert RunConfig.quick(task="sentiment").task == "sentiment"
    assert RunConfig().task == "sentiment"  # the full run's default is unchanged


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    """`textenv run --quick --task sentiment`: every stage on the prose model and VADER."""
    run_dir = tmp_path_factory.mktemp("run") / "sentiment"
    return run_dir, run(RunConfig.quick(task="sentiment"), run_dir)


@pytest.mark.parametrize("which", ["finished_run", "sentiment_run"])
def test_quick_run_proxy_reward_rises(which, request):
    run_dir = request.getfixturevalue(which)[0]
    curve = json.loads((run_dir / "policy" / "curve.json").read_text())
    first, last = curve[0]["rm_score"], curve[-1]["rm_score"]
    se = float(np.hypot(first["sem"], last["sem"]))
    assert last["mean"] - first["mean"] > 2 * se, (first, last)


@pytest.mark.parametrize("which", ["finished_run", "sentiment_run"])
def test_quick_run_writes_every_output(which, request):
    run_dir, summaries = request.getfixturevalue(which)
    assert set(summaries) == set(pipeline.STAGES)
    for path in (
        "config.json",
        "samples/samples.jsonl",
        "preferences/preferences.jsonl",
        "reward_model/rm/model.safetensors",
        "policy/curve.json",
        "policy/final/model.safetensors",
        "policy/logs/metrics.jsonl",
        "evaluation/reward_vs_kl.png",
        "evaluation/done.json",
    ):
        assert (run_dir / path).is_file(), path
    table = summaries["evaluation"]["table"]
    assert set(table) == {"proxy RM", "gold", "KL"}
    assert table["KL"]["before"]["mean"] == pytest.approx(0.0, abs=1e-6)  # base LM = reference
    curve = json.loads((run_dir / "policy" / "curve.json").read_text())
    assert [p["iteration"] for p in curve] == [0, 3, 6]
    assert (run_dir / "evaluation" / "reward_vs_kl.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_run_resumes_to_the_same_numbers(finished_run, tmp_path, monkeypatch):
    reference_dir, reference = finished_run
    run_dir = tmp_path / "b"
    real_learn_chunks = []

    original = pipeline.atomic_write_json

    def interrupt_after_first_checkpoint(path, data):
        original(path, data)
        if path.name == "curve.json":
            real_learn_chunks.append(1)
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after one checkpoint

    monkeypatch.setattr(pipeline, "atomic_write_json", interrupt_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(RunConfig.quick(), run_dir)
    monkeypatch.setattr(pipeline, "atomic_write_json", original)
    assert (run_dir / "reward_model" / "done.json").is_file()
    assert not (run_dir / "policy" / "done.json").exists()

    resumed = run(RunConfig(), run_dir, resume=True)  # the config comes from the run folder
    assert resumed["evaluation"]["table"] == reference["evaluation"]["table"]
    assert json.loads((run_dir / "policy" / "curve.json").read_text()) == json.loads(
        (reference_dir / "policy" / "curve.json").read_text()
    )


def test_bad_run_config_and_occupied_folder(tmp_path):
    with pytest.raises(ValueError, match="algo must be one of"):
        run(RunConfig(algo="dqn"), tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="pass --resume"):
        run(RunConfig.quick(), tmp_path / "busy")
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        run(RunConfig(), tmp_path / "empty", resume=True)
