from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from textenv.lm.models import (
    ModelLoadError,
    byte_tokenizer,
    load_causal_lm,
    load_frozen_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
)
from textenv.rewards import load_reward


def test_byte_tokenizer_roundtrips_any_text():
    tok = byte_tokenizer()
    text = "Grüße, 世界! <tag>\n"
    ids = tok(text)["input_ids"]
    assert ids == list(text.encode())
    assert tok.decode(ids) == text
    assert len(tok) == 257 and tok.eos_token_id == 256 and tok.pad_token_id == 256


def test_tiny_spec_is_deterministic_and_configurable():
    a, b = load_causal_lm("tiny:seed=3"), load_causal_lm("tiny:seed=3")
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, load_causal_lm("tiny:seed=4").lm_head.weight)
    m = load_causal_lm("tiny:layers=1,width=32,heads=2,vocab=300")
    assert m.config.n_layer == 1 and m.config.vocab_size == 300
    assert all(p.requires_grad for p in m.parameters())  # trainable copies are not frozen
    with pytest.raises(ModelLoadError, match="bad tiny spec"):
        load_causal_lm("tiny:depth=3")


def test_frozen_models_are_cached_and_frozen():
    a = load_frozen_causal_lm("tiny")
    assert a is load_frozen_causal_lm("tiny")
    assert not any(p.requires_grad for p in a.parameters())
    assert a is not load_frozen_causal_lm("tiny", dtype="bfloat16")


def test_save_pretrained_folder_roundtrips(tmp_path):
    model = load_causal_lm("tiny")
    model.save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    loaded = load_causal_lm(str(tmp_path))
    assert torch.equal(model.lm_head.weight, loaded.lm_head.weight)
    assert len(load_tokenizer(str(tmp_path))) == 257

    rm = load_sequence_classifier("tiny-rm")
    rm.save_pretrained(tmp_path / "rm")
    byte_tokenizer().save_pretrained(tmp_path / "rm")
    reward = load_reward(str(tmp_path / "rm"))
    assert len(reward(["a", "b"], ["c", "d"], [{}, {}])) == 2


def test_missing_path_and_wrong_kinds(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_causal_lm(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no built-in model 'nope'"):
        load_causal_lm("builtin:nope")
    with pytest.raises(ModelLoadError, match="reward-model spec, not a causal LM"):
        load_causal_lm("tiny-rm")
    with pytest.raises(ModelLoadError, match="causal-LM spec; a reward model needs 'tiny-rm'"):
        load_sequence_classifier("tiny")
    with pytest.raises(ModelLoadError, match="cannot import module"):
        load_reward("no_such_module_xyz:score")


def test_vocab_mismatch_is_an_error(tmp_path):
    config = GPT2Config(vocab_size=100, n_layer=1, n_embd=16, n_head=2, n_positions=32)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="tokenizer has 257 tokens but the model only 100"):
        load_causal_lm(str(tmp_path))


def test_retrained_folder_is_not_served_from_a_stale_cache(tmp_path):
    import os
    import time

    load_causal_lm("tiny:seed=1").save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    first = load_frozen_causal_lm(str(tmp_path))
    assert first is load_frozen_causal_lm(str(tmp_path))
    time.sleep(0.01)
    load_causal_lm("tiny:seed=2").save_pretrained(tmp_path)
    os.utime(tmp_path / "config.json")
    second = load_frozen_causal_lm(str(tmp_path))
    assert second is not first
    assert not torch.equal(first.lm_head.weight, second.lm_head.weight)
