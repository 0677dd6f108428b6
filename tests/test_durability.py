"""Nothing runs that was not asked for, nothing is lost: checkpoints, reward-model folders, metrics
and run folders under kills (simulated by raising in the middle of a save, or a real SIGINT)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import PPO, RLOO, PPOConfig, RLOOConfig
from agents.base import UntrustedSpecError, is_checkpoint
from textenv.files import atomic_write_dir
from textenv.preferences import PreferencePair, write_jsonl


def small(config_cls=PPOConfig, **kw):
    base = dict(env_id="textenv/Sort-v0", num_envs=8, minibatch_size=4, progress=False)
    return config_cls(**{**base, **kw})


def _iterations(log_dir: Path) -> list[int]:
    lines = (log_dir / "metrics.jsonl").read_text().splitlines()
    return [int(json.loads(x)["iteration"]) for x in lines]


# --------------------------------------------------------------------------- no code on load


class _Payload:
    """Unpickling this runs code (it touches a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_is_never_unpickled(tmp_path):
    path = PPO(small()).save(tmp_path / "ckpt")
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.bin"))  # JSON + safetensors
    # A crafted checkpoint in the pickled format: loading must refuse, not run it.
    marker = tmp_path / "pwned"
    state = {"algo": "ppo", "iteration": 0, "payload": _Payload(marker)}
    for name in ("agent.json", "state.safetensors"):
        (path / name).unlink()
    torch.save(state, path / "agent.pt")
    with pytest.raises(ValueError, match="refusing to unpickle"):
        PPO.load(path)
    assert not marker.exists()


@pytest.fixture
def spec_module(tmp_path, monkeypatch):
    """A module whose import and call both leave a mark."""
    marker = tmp_path / "imported"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "evil_spec.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).touch()\n"
        "def prompts(*args, **kwargs):\n"
        "    return ['3 1 2 =']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, "evil_spec", raising=False)
    return marker


def test_specs_in_a_saved_config_need_an_opt_in(tmp_path, spec_module):
    path = PPO(small(log_dir=str(tmp_path / "logs"))).save(tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["env_kwargs"]["prompts"] = "evil_spec:prompts"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UntrustedSpecError, match="evil_spec:prompts.*trust_specs=True"):
        PPO.load(path)
    assert not spec_module.exists()  # not even imported
    # The user passing the value themselves is fine (a built-in task spec is allowed).
    own = {"prompts": "textenv.tasks.sort:prompts", "gold": "textenv.tasks.sort:gold_score"}
    agent = PPO.load(path, env_kwargs=own)
    assert agent.config.env_kwargs == own and not spec_module.exists()
    # An env id naming a module is code too.
    config["env_kwargs"] = {}
    config["env_id"] = "evil_spec:Sort-v0"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UntrustedSpecError, match="env_id"):
        PPO.load(path)
    assert not spec_module.exists()
    # With the opt-in, the spec is imported.
    config["env_id"] = "textenv/Sort-v0"
    config["env_kwargs"]["prompts"] = "evil_spec:prompts"
    (path / "config.json").write_text(json.dumps(config))
    PPO.load(path, trust_specs=True)
    assert spec_module.exists()


def test_saved_log_dir_does_not_choose_where_to_write(tmp_path):
    path = PPO(small(log_dir=str(tmp_path / "elsewhere"))).save(tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="not logging to the saved log_dir"):
        agent = PPO.load(path)
    assert agent.config.log_dir is None
    agent.learn(10**6, iterations=1)
    assert not (tmp_path / "elsewhere").exists()
    assert PPO.load(path, log_dir=str(tmp_path / "mine")).config.log_dir == str(tmp_path / "mine")
    assert PPO.load(path, trust_specs=True).config.log_dir == str(tmp_path / "elsewhere")


# --------------------------------------------------------------------------- agent checkpoints


def test_periodic_checkpoint_survives_a_crash_and_resume_does_not_repeat_metrics(tmp_path):
    logs = tmp_path / "logs"
    agent = PPO(small(lr=1e-3, save_every=2, log_dir=str(logs)))
    original = agent._update
    calls = []

    def crash_on_fourth(rollout):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed in the middle of iteration 4
        return original(rollout)

    agent._update = crash_on_fourth
    with pytest.raises(KeyboardInterrupt):
        agent.learn(10**6, iterations=10, checkpoint=tmp_path / "ckpt")
    assert _iterations(logs) == [1, 2, 3]
    resumed = PPO.load(tmp_path / "ckpt", log_dir=str(logs))
    assert resumed.iteration == 2  # the last periodic checkpoint
    assert _iterations(logs) == [1, 2]  # rows after the checkpoint are dropped (redone)
    resumed.learn(10**6, iterations=2)
    assert _iterations(logs) == [1, 2, 3, 4]
    # The same weights as a run that was never interrupted.
    straight = PPO(small(lr=1e-3)).learn(10**6, iterations=4)
    torch.testing.assert_close(
        torch.cat([p.flatten() for p in resumed.parameters()]),
        torch.cat([p.flatten() for p in straight.parameters()]),
        atol=0,
        rtol=0,
    )


def test_sigint_during_learn_saves_and_returns(tmp_path):
    agent = RLOO(small(RLOOConfig, k=2))
    original = agent._update

    def interrupt_on_second(rollout):
        if agent.iteration == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of iteration 2
        return original(rollout)

    agent._update = interrupt_on_second
    agent.learn(10**6, iterations=50, checkpoint=tmp_path / "ckpt")
    assert agent.interrupted == "SIGINT" and agent.iteration == 2  # the iteration finished
    assert RLOO.load(tmp_path / "ckpt").iteration == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_new_agent_never_appends_to_another_runs_metrics(tmp_path):
    logs = tmp_path / "logs"
    PPO(small(log_dir=str(logs))).learn(10**6, iterations=1)
    with pytest.raises(FileExistsError, match="another run's metrics"):
        PPO(small(log_dir=str(logs)))
    assert _iterations(logs) == [1]


def test_save_refuses_an_unrelated_folder_and_cleans_killed_saves(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    agent = PPO(small())
    with pytest.raises(FileExistsError, match="refusing to replace"):
        agent.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # A save killed by SIGKILL leaves its temp folder; the next save removes it.
    (tmp_path / ".ckpt.tmp-killed").mkdir()
    (tmp_path / ".ckpt.tmp-killed" / "partial").write_text("x")
    agent.save(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "notes.txt"]


def test_extending_the_budget_on_resume_never_raises_the_lr(tmp_path):
    agent = PPO(small(lr=1e-3))
    agent.learn(400, iterations=2)
    lr_before = agent.history[-1]["lr"]
    agent.save(tmp_path / "ckpt")
    resumed = PPO.load(tmp_path / "ckpt")
    expected = resumed.current_lr()  # where the original schedule stands
    assert expected < lr_before
    resumed.learn(4000, iterations=2)  # a ten times larger budget
    lrs = [h["lr"] for h in resumed.history[2:]]
    assert lrs[0] == pytest.approx(expected) and lrs[1] < lrs[0]
    # Linear from there to 0 at the new budget.
    t0, t1 = agent.tokens_seen, resumed.history[2]["tokens"]
    assert lrs[1] == pytest.approx(expected * (4000 - t1) / (4000 - t0))
    # A finished schedule stays at 0; a new lr passed on load starts a new decay.
    resumed.learn(resumed.tokens_seen + 1)
    resumed.save(tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="runs at lr 0"):
        PPO.load(tmp_path / "ckpt").learn(10**6, iterations=1)
    again = PPO.load(tmp_path / "ckpt", lr=5e-4)
    again.learn(10**6, iterations=1)
    assert again.history[-1]["lr"] == pytest.approx(5e-4)


def test_bools_are_not_integers_in_configs():
    for kw, name in (({"num_envs": True}, "num_envs"), ({"lr": False}, "lr")):
        with pytest.raises(ValueError, match=name):
            small(**kw)
    with pytest.raises(ValueError, match="progress"):
        small(progress=1)


# --------------------------------------------------------------------------- textenv train


def _train_argv(out: Path, *extra: str) -> list[str]:
    config = '{"num_envs": 4, "minibatch_size": 4, "progress": false}'
    return ["train", "--algo", "rloo", "--k", "2", "--env", "textenv/Sort-v0",
            "--config", config, "--out", str(out), *extra]  # fmt: skip


def test_cli_train_refuses_an_existing_out_and_resumes(tmp_path, capsys):
    from textenv.cli import main

    out = tmp_path / "agent"
    assert main(_train_argv(out, "--total-tokens", "40")) == 0
    first = _iterations(tmp_path / "agent-logs")
    with pytest.raises(SystemExit, match="--resume to continue it or --overwrite"):
        main(_train_argv(out, "--total-tokens", "80"))
    assert _iterations(tmp_path / "agent-logs") == first  # nothing appended
    assert main(_train_argv(out, "--total-tokens", "80", "--resume")) == 0
    resumed = _iterations(tmp_path / "agent-logs")
    assert resumed == list(range(1, len(resumed) + 1)) and len(resumed) > len(first)
    assert main(_train_argv(out, "--total-tokens", "40", "--overwrite")) == 0
    assert _iterations(tmp_path / "agent-logs") == first  # a new run, its own metrics only
    # A run SIGKILLed before its first checkpoint left metrics: a rerun does not append to them.
    shutil.rmtree(out)
    with pytest.raises(SystemExit, match="another run's metrics.*--overwrite"):
        main(_train_argv(out, "--total-tokens", "40"))
    assert _iterations(tmp_path / "agent-logs") == first
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="not a folder"):
        main(_train_argv(tmp_path / "file", "--total-tokens", "40"))
    with pytest.raises(SystemExit, match="nothing to resume"):
        main(_train_argv(tmp_path / "none", "--resume"))


def test_cli_train_ctrl_c_saves_and_resume_continues(tmp_path):
    """A real SIGINT to a `textenv train` process: it saves, exits 130, and --resume goes on."""
    out = tmp_path / "agent"
    argv = _train_argv(out, "--total-tokens", "100000000", "--save-every", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "textenv.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not is_checkpoint(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert is_checkpoint(out), proc.communicate()[0] if proc.poll() is not None else ""
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "SIGINT: saved rloo agent at iteration" in output
    saved = RLOO.load(out).iteration
    assert _iterations(tmp_path / "agent-logs") == list(range(1, saved + 1))
    from textenv.cli import main

    assert (
        main(_train_argv(out, "--total-tokens", str(RLOO.load(out).tokens_seen + 30), "--resume"))
        == 0
    )
    logged = _iterations(tmp_path / "agent-logs")
    assert logged == list(range(1, len(logged) + 1)) and len(logged) > saved


# --------------------------------------------------------------------------- reward models

BACKBONE = "tiny-rm:layers=1,width=32,heads=2"


def _pairs(n: int = 40) -> list[PreferencePair]:
    rng = np.random.default_rng(0)
    return [
        PreferencePair(f"p{i % 8} ", "a" * int(k) + "x", "x")
        for i, k in enumerate(rng.integers(1, 5, size=n))
    ]


@pytest.mark.parametrize("kind", ["backbone", "fused"])
def test_rm_out_naming_a_file_fails_before_training(tmp_path, kind, monkeypatch):
    from textenv.cli import main
    from textenv.training import fused_head, reward_model

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(reward_model, "load_backbone", no_training)
    monkeypatch.setattr(fused_head, "FusedRewardHead", no_training)
    data = tmp_path / "prefs.jsonl"
    write_jsonl(data, _pairs())
    (tmp_path / "taken").write_text("x")
    spec = BACKBONE if kind == "backbone" else "tiny"
    argv = ["rm", "train", "--data", str(data), "--kind", kind, "--backbone", spec]
    with pytest.raises(SystemExit, match="not a folder"):
        main([*argv, "--out", str(tmp_path / "taken")])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="refusing to replace"):
        main([*argv, "--out", str(tmp_path / "other")])


def test_rm_folder_is_written_atomically(tmp_path, monkeypatch):
    """A kill between the weights and the tokenizer leaves no folder (or the previous one)."""
    from textenv.rewards import load_reward
    from textenv.training import reward_model

    out = tmp_path / "rm"
    real = reward_model.load_backbone

    def killed_at_tokenizer(spec, device="cpu"):
        model, tokenizer = real(spec, device)

        def kill(*args, **kwargs):
            raise KeyboardInterrupt

        tokenizer.save_pretrained = kill
        return model, tokenizer

    monkeypatch.setattr(reward_model, "load_backbone", killed_at_tokenizer)
    with pytest.raises(KeyboardInterrupt):
        reward_model.train_reward_model(_pairs(), out, backbone=BACKBONE, epochs=1, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing gym.make could take
    monkeypatch.setattr(reward_model, "load_backbone", real)
    reward_model.train_reward_model(_pairs(), out, backbone=BACKBONE, epochs=1, progress=False)
    before = load_reward(str(out))(["p1 "], ["aax"], [{}])
    weights = (out / "model.safetensors").read_bytes()
    monkeypatch.setattr(reward_model, "load_backbone", killed_at_tokenizer)
    with pytest.raises(KeyboardInterrupt):
        reward_model.train_reward_model(
            _pairs(), out, backbone=BACKBONE, epochs=2, lr=1e-2, progress=False
        )
    assert (out / "model.safetensors").read_bytes() == weights  # the previous folder, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]
    np.testing.assert_allclose(load_reward(str(out))(["p1 "], ["aax"], [{}]), before)


# --------------------------------------------------------------------------- textenv run


def test_run_resume_uses_the_previous_checkpoint_and_loses_no_curve_point(tmp_path, capsys):
    from textenv import pipeline
    from textenv.pipeline import RunConfig, run

    run_dir = tmp_path / "run"
    original = pipeline.atomic_write_json

    def killed_before_point_3(path, data):
        if Path(path).name == "curve.json" and data[-1]["iteration"] == 3:
            raise KeyboardInterrupt  # the checkpoint of iteration 3 is saved, its point is not
        original(path, data)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(pipeline, "atomic_write_json", killed_before_point_3)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(RunConfig.quick(n_prompts=32, eval_prompts=16), run_dir)
    finally:
        monkeypatch.undo()
    checkpoint = run_dir / "policy" / "checkpoint"
    # ... and the next save was killed between its two renames: only the previous one is left.
    os.replace(checkpoint, checkpoint.parent / ".checkpoint.old")
    capsys.readouterr()
    with pytest.warns(UserWarning, match="interrupted save"):
        run(RunConfig(), run_dir, resume=True)
    assert "resuming from iteration 3" in capsys.readouterr().out
    curve = json.loads((run_dir / "policy" / "curve.json").read_text())
    assert [p["iteration"] for p in curve] == [0, 3, 6]
    assert _iterations(run_dir / "policy" / "logs") == [1, 2, 3, 4, 5, 6]


def test_atomic_write_dir_keeps_the_old_folder_on_a_kill(tmp_path):
    target = tmp_path / "folder"
    atomic_write_dir(target, lambda tmp: (tmp / "a").write_text("old"))

    def killed(tmp):
        (tmp / "a").write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_dir(target, killed)
    assert (target / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
