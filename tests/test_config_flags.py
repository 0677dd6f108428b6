"""Command-line flags built from config dataclasses (textenv train, textenv rm train)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from agents import ALGORITHMS
from textenv.cli import build_parser, main
from textenv.cli.config_flags import config_values


def test_train_flags_are_the_agent_config_fields():
    parser = build_parser("train")
    args = parser.parse_args(["train", "--out", "o"])
    offered = {f.name for _, config in ALGORITHMS.values() for f in fields(config)}
    assert args._config_fields == offered
    assert config_values(args, ALGORITHMS["ppo"][1]) == {}  # nothing typed: config defaults
    # The flags `textenv train` always had keep their names and meaning.
    argv = ["train", "--out", "o", "--env", "textenv/Tiny-v0", "--env-kwargs", '{"kl_coef": 0.1}',
            "--seed", "3", "--log-dir", "logs", "--no-anneal-lr", "--save-every", "5"]  # fmt: skip
    values = config_values(parser.parse_args(argv), ALGORITHMS["ppo"][1])
    assert values == {
        "env_id": "textenv/Tiny-v0",
        "env_kwargs": {"kl_coef": 0.1},
        "seed": 3,
        "log_dir": "logs",
        "anneal_lr": False,
        "save_every": 5,
    }


def test_bad_flags_are_named(tmp_path, capsys):
    out = str(tmp_path / "agent")
    with pytest.raises(SystemExit, match="--group-size: not a setting of PPOConfig"):
        main(["train", "--algo", "ppo", "--group-size", "4", "--out", out])
    with pytest.raises(SystemExit):
        main(["train", "--env-kwargs", "{bad", "--out", out])
    assert "--env-kwargs: not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="num_envs must be a positive integer"):
        main(["train", "--num-envs", "0", "--out", out])
    assert not (tmp_path / "agent").exists()
