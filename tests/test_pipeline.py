"""`textenv run`: the whole loop end to end on a tiny budget; seeded; resumable."""

from __future__ import annotations

import json

import pytest

from textenv import pipeline
from textenv.pipeline import RunConfig, run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "a"
    summaries = run(RunConfig.quick(), run_dir)  # exactly `textenv run --quick`
    return run_dir, summaries


def test_quick_run_writes_every_output(finished_run):
    run_dir, summaries = finished_run
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
