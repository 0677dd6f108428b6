"""Bradley–Terry reward-model training: learns a simple preference, saves a folder that
`textenv.rewards.load_reward` reads back with the same scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textenv.lm.models import BUILTIN_MODELS_DIR
from textenv.preferences import PreferencePair, write_jsonl
from textenv.rewards import load_reward
from textenv.training.reward_model import (
    evaluate_reward,
    load_backbone,
    split_by_prompt,
    train_reward_model,
)

BACKBONE = "tiny-rm:layers=1,width=32,heads=2"


def _pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Completions with more 'a's are preferred: easy to learn for a byte-level model."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k1, k2 = rng.choice(6, size=2, replace=False)
        filler = "".join(rng.choice(list("xyz"), size=3))
        a, b = "a" * k1 + filler, "a" * k2 + filler
        chosen, rejected = (a, b) if k1 > k2 else (b, a)
        out.append(PreferencePair(f"p{i % 20} ", chosen, rejected))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    pairs = _pairs(300)
    path = out.parent / "prefs.jsonl"
    write_jsonl(path, pairs)
    metrics = train_reward_model(
        path, out, backbone=BACKBONE, epochs=6, batch_size=32, lr=3e-3, progress=False, seed=0
    )
    return out, metrics, pairs


def test_learns_and_reports_metrics(trained):
    out, m, _ = trained
    assert m["n_train"] + m["n_val"] == 300 and 0 < m["n_val"] < 60
    assert m["val_accuracy"] > 0.85, m["history"]
    assert m["history"][0]["epoch"] == 0 and "val_loss" in m["history"][0]
    for row in m["history"][1:]:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(row)
    saved = json.loads((out / "training_metrics.json").read_text())
    assert saved["best_epoch"] == m["best_epoch"]
    assert (out / "model.safetensors").exists()


def test_saved_folder_loads_as_env_reward_with_normalisation(trained):
    out, m, pairs = trained
    reward = load_reward(str(out))
    config = reward.model.config
    assert config.num_labels == 1 and config.pad_token_id is not None
    assert config.reward_mean == pytest.approx(m["reward_mean"])
    # Normalised on the training completions: mean ≈ 0, std ≈ 1 there.
    texts = list(dict.fromkeys(c for p in pairs for c in (p.chosen, p.rejected)))
    prompts = [next(p.prompt for p in pairs if t in (p.chosen, p.rejected)) for t in texts]
    scores = reward(prompts, texts, [{}] * len(texts))
    assert abs(float(np.mean(scores))) < 0.3 and 0.6 < float(np.std(scores)) < 1.5
    ev = evaluate_reward(str(out), pairs)
    assert ev["accuracy"] > 0.85 and ev["n"] == 300


def test_scores_match_training_encoding(trained):
    """The env's loader and the trainer give the same scores (same padding and positions)."""
    from textenv.training.reward_model import _Encoder, _score_all

    out, m, _ = trained
    reward = load_reward(str(out))
    texts = ["p1 aaaxyz", "p2 z", "p3 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaax"]
    enc = _Encoder(reward.tokenizer, 256)
    mine = (_score_all(reward.model, enc, texts, "cpu") - m["reward_mean"]) / m["reward_std"]
    theirs = reward(["p1 ", "p2 ", "p3 "], [t[3:] for t in texts], [{}] * 3)
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)


def test_early_stopping_margin_and_centering(tmp_path):
    pairs = _pairs(120)
    # Random labels: nothing to learn, validation loss stops improving.
    rng = np.random.default_rng(1)
    noisy = [
        p if rng.random() < 0.5 else PreferencePair(p.prompt, p.rejected, p.chosen, 1.0)
        for p in pairs
    ]
    m = train_reward_model(
        noisy, tmp_path / "rm", backbone=BACKBONE, epochs=30, lr=3e-3, patience=1,
        center_coef=0.01, normalize=False, progress=False,
    )  # fmt: skip
    assert m["stopped_early"] and m["epochs_run"] < 30
    assert m["reward_mean"] == 0.0 and m["reward_std"] == 1.0


def test_split_keeps_prompts_together():
    pairs = _pairs(200)
    train, val = split_by_prompt(pairs, 0.2, seed=0)
    assert len(train) + len(val) == 200 and 20 <= len(val) <= 60
    assert not {p.prompt for p in train} & {p.prompt for p in val}
    assert split_by_prompt(pairs, 0.0) == (pairs, [])


def test_backbone_from_causal_lm_folder_and_tiny_lm(tmp_path):
    from textenv.lm.models import load_causal_lm

    lm = load_causal_lm("tiny:layers=1,width=32")
    lm.save_pretrained(tmp_path / "lm")
    from textenv.lm.models import byte_tokenizer

    byte_tokenizer().save_pretrained(tmp_path / "lm")
    model, tok = load_backbone(str(tmp_path / "lm"))
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    assert tok.padding_side == "left" and tok.truncation_side == "left"
    assert all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(
        model.transformer.wte.weight, lm.transformer.wte.weight
    )  # initialised from the LM
    model2, _ = load_backbone("tiny:layers=1,width=32")
    assert model2.config.num_labels == 1
    # Training must not touch the shared cached frozen RM.
    from textenv.lm.models import load_sequence_classifier

    assert not any(p.requires_grad for p in load_sequence_classifier("tiny-rm").parameters())


def test_cli_train_and_eval(tmp_path, capsys):
    from textenv.cli import main

    data = tmp_path / "prefs.jsonl"
    write_jsonl(data, _pairs(60))
    out = tmp_path / "rm"
    argv = ["rm", "train", "--data", str(data), "--out", str(out), "--backbone", BACKBONE,
            "--epochs", "2", "--lr", "3e-3"]  # fmt: skip
    assert main(argv) == 0
    assert "saved reward model" in capsys.readouterr().out
    assert main(["rm", "eval", "--model", str(out), "--data", str(data)]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.skipif(
    not (BUILTIN_MODELS_DIR / "prose" / "config.json").exists(), reason="builtin:prose not built"
)
def test_default_backbone_is_prose_lm():
    model, tok = load_backbone("builtin:prose")
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    assert len(tok) <= model.config.vocab_size


# --------------------------------------------------------------------------- one loop, one config


def test_both_kinds_share_the_loop_and_the_metric_names(tmp_path):
    from textenv.training.fused_head import train_fused_head

    pairs = _pairs(80)
    backbone = train_reward_model(
        pairs, tmp_path / "b", backbone=BACKBONE, epochs=2, lr=3e-3, progress=False
    )
    fused = train_fused_head(pairs, tmp_path / "f", reference="tiny", epochs=2)
    assert set(backbone) == set(fused)
    assert (backbone["kind"], fused["kind"]) == ("backbone", "fused")
    for m in (backbone, fused):
        assert m["epochs_run"] == 2 and m["history"][0]["epoch"] == 0
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(m["history"][1])
        assert m["val_accuracy"] == next(
            h["val_accuracy"] for h in m["history"] if h["epoch"] == m["best_epoch"]
        )
    saved = json.loads((tmp_path / "f" / "training_metrics.json").read_text())
    assert saved["config"]["kind"] == "fused" and saved["config"]["lr"] == 3e-3  # kind default


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"epochs": True}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"center_coef": float("nan")}, "center_coef"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"use_margin": 1}, "use_margin"),
        ({"kind": "linear"}, "kind"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_config_errors_name_the_field(kw, name):
    from textenv.training.reward_model import RewardModelConfig

    with pytest.raises(ValueError, match=name):
        RewardModelConfig(**kw)


def test_settings_and_config_together(tmp_path):
    from textenv.training.reward_model import RewardModelConfig

    with pytest.raises(TypeError, match="unknown reward-model settings.*epoch"):
        train_reward_model(_pairs(20), tmp_path / "x", backbone=BACKBONE, epoch=2)
    with pytest.raises(ValueError, match="config.kind is 'fused'"):
        train_reward_model(_pairs(20), tmp_path / "x", RewardModelConfig(kind="fused"))
    assert not (tmp_path / "x").exists()


def test_rm_train_flags_are_the_config_fields(tmp_path, capsys):
    from dataclasses import fields

    from textenv.cli import build_parser, main
    from textenv.training.reward_model import RewardModelConfig

    parser = build_parser("rm")
    base = ["rm", "train", "--data", "d", "--out", "o"]
    args = parser.parse_args(base)
    assert args._config_fields == {f.name for f in fields(RewardModelConfig)}
    # The historical flag names keep working.
    argv = ["--epochs", "3", "--lr", "0.01", "--batch-size", "8", "--center-coef", "0.01",
            "--no-margin", "--no-normalize", "--backbone", BACKBONE, "--kind", "fused"]  # fmt: skip
    args = parser.parse_args(base + argv)
    assert (args.epochs, args.lr, args.batch_size, args.use_margin, args.normalize) == (
        3, 0.01, 8, False, False
    )  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--epochs", "two"])
    data = tmp_path / "prefs.jsonl"
    write_jsonl(data, _pairs(60))
    out = tmp_path / "fused"
    assert main(["rm", "train", "--data", str(data), "--out", str(out), "--kind", "fused",
                 "--backbone", "tiny", "--epochs", "2"]) == 0  # fmt: skip
    assert "saved reward model (fused)" in capsys.readouterr().out
    assert json.loads((out / "training_metrics.json").read_text())["epochs_run"] == 2
    with pytest.raises(SystemExit, match="patience must be a positive integer"):
        main(["rm", "train", "--data", str(data), "--out", str(out), "--patience", "0"])
