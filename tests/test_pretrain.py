"""The seeded pretraining pipeline (textenv.training.pretrain): determinism and outputs, on tiny runs."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch

from textenv.cli import pretrain as pretrain_cli
from textenv.tasks import sort
from textenv.training import pretrain as P


def _tiny_cfg(**kw) -> P.TrainConfig:
    base = dict(n_layer=1, n_embd=32, n_head=2, n_positions=64, seq_len=32, batch_size=8,
                steps=6, warmup=2, lr=3e-3)  # fmt: skip
    base.update(kw)
    return P.TrainConfig(**base)


def _tiny_run(seed: int, texts: list[str]):
    tok = sort.build_tokenizer()
    stream, starts = P.encode_texts(tok, texts)
    cfg = _tiny_cfg(aligned_frac=0.5)
    model = P.make_model(cfg, tok, seed)
    res = P.train_lm(model, stream, starts, cfg, seed=seed)
    return res, model


def test_train_lm_is_deterministic_under_a_seed():
    texts = sort.lm_texts(300, seed=0)
    with torch.random.fork_rng(devices=[]):
        r1, m1 = _tiny_run(3, texts)
        r2, m2 = _tiny_run(3, texts)
        r3, _ = _tiny_run(4, texts)
    assert [h["loss"] for h in r1["history"]] == [h["loss"] for h in r2["history"]]
    assert r1["final_loss"] == r2["final_loss"]
    for (n1, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1
    assert r3["final_loss"] != r1["final_loss"]


def test_encode_texts_ends_every_text_with_eos():
    tok = sort.build_tokenizer()
    stream, starts = P.encode_texts(tok, ["12>12", "3>3"])
    eos = tok.eos_token_id
    assert stream.tolist() == tok("12>12")["input_ids"] + [eos] + tok("3>3")["input_ids"] + [eos]
    assert starts.tolist() == [0, 6]


def test_bpe_tokenizer_is_deterministic_and_byte_level():
    texts = ["The return value is a list of strings.", "Return the number of items."] * 20
    t1 = P.train_bpe_tokenizer(texts, 300)
    t2 = P.train_bpe_tokenizer(texts, 300)
    assert t1.backend_tokenizer.to_str() == t2.backend_tokenizer.to_str()
    assert t1.eos_token == t1.pad_token == t1.bos_token == "<|endoftext|>"
    assert t1.eos_token_id == 0
    text = "Unseen wörds → round-trip"  # byte-level: nothing is unknown
    assert t1.decode(t1(text)["input_ids"]) == text


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = _tiny_cfg(steps=100, warmup=10, lr=1.0, min_lr_frac=0.1)
    lrs = [P._lr_at(s, cfg, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.fixture
def keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # pretrain(threads=...) sets it process-wide


def test_pretrain_sort_few_steps_is_reproducible(tmp_path, monkeypatch, keep_torch_threads):
    # A smaller data set than the real run keeps this fast; the pipeline is the same.
    cfg = dataclasses.replace(
        P.BASE_MODELS["sort"], extra={**P.BASE_MODELS["sort"].extra, "n_train": 3000}
    )
    monkeypatch.setitem(P.BASE_MODELS, "sort", cfg)
    with torch.random.fork_rng(devices=[]):
        m1 = P.pretrain("sort", str(tmp_path / "a"), seed=1, steps=4, threads=1, log=None)
        m2 = P.pretrain("sort", str(tmp_path / "b"), seed=1, steps=4, threads=1, log=None)
    for key in ("final_train_batch_loss", "heldout_loss", "eval_gold_mean_t1", "samples"):
        assert m1[key] == m2[key], key
    assert m1["steps"] == 4 and m1["parameters"] > 0
    on_disk = json.loads((tmp_path / "a" / "pretrain_metrics.json").read_text())
    assert on_disk["heldout_perplexity"] == pytest.approx(m1["heldout_perplexity"])
    assert np.isfinite(on_disk["heldout_perplexity"])
    assert 0.0 <= on_disk["eval_gold_mean_t1"] <= 1.0

    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    model = GPT2LMHeadModel.from_pretrained(str(tmp_path / "a"))
    tok = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "a"))
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id == model.config.pad_token_id
    assert model.config.resid_pdrop == model.config.embd_pdrop == model.config.attn_pdrop == 0.0


def test_pretrain_rejects_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="unknown base model"):
        P.pretrain("nope", str(tmp_path), steps=1, log=None)


def test_cli_arguments():
    parser = argparse.ArgumentParser()
    pretrain_cli.add_arguments(parser)
    args = parser.parse_args(["sort", "--steps", "3", "--seed", "2", "--threads", "1"])
    assert (args.task, args.steps, args.seed, args.threads, args.out) == ("sort", 3, 2, 1, None)
    assert args.task_data is False
    with pytest.raises(SystemExit):
        parser.parse_args(["unknown-task"])


def test_pretrain_command_is_wired_into_the_cli(tmp_path):
    from textenv.cli import main

    assert main(["pretrain", "sort", "--steps", "3", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "pretrain_metrics.json").is_file()
