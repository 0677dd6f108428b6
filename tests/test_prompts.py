from __future__ import annotations

import json

import gymnasium as gym
import pytest

from textenv.env.prompts import PromptError, load_prompts

PROMPTS = [f"prompt number {i}" for i in range(20)]


def test_list_split_is_deterministic_disjoint_and_complete():
    train = load_prompts(PROMPTS, "train", eval_fraction=0.25)
    evals = load_prompts(PROMPTS, "eval", eval_fraction=0.25)
    assert len(evals) == 5 and len(train) == 15
    assert {p.text for p in train}.isdisjoint(p.text for p in evals)
    assert {p.text for p in train} | {p.text for p in evals} == set(PROMPTS)
    assert load_prompts(PROMPTS, "train", eval_fraction=0.25) == train
    assert len(load_prompts(PROMPTS, "all")) == 20


def test_text_and_jsonl_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert [p.text for p in load_prompts(txt, "all")] == ["one", "two"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "a", "label": 1}) + "\n" + json.dumps({"prompt": "b"}))
    prompts = load_prompts(str(jsonl), "all")
    assert prompts[0].text == "a" and prompts[0].metadata == {"label": 1}


def test_dataset_like_source():
    class FakeDataset:
        column_names = ["prompt", "id"]

        def __iter__(self):
            yield from ({"prompt": f"p{i}", "id": i} for i in range(4))

    prompts = load_prompts(FakeDataset(), "all")
    assert [p.metadata["id"] for p in prompts] == [0, 1, 2, 3]


def test_bad_sources(tmp_path):
    with pytest.raises(PromptError, match="prompt list is empty"):
        load_prompts([], "train")
    with pytest.raises(PromptError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(PromptError, match="is empty"):
        load_prompts(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt key"}\n')
    with pytest.raises(PromptError, match=r"bad.jsonl:2: expected a 'prompt' string key"):
        load_prompts(bad)
    with pytest.raises(PromptError, match="unknown split"):
        load_prompts(PROMPTS, "test")
    with pytest.raises(PromptError, match="prompt list is empty"):
        gym.make("textenv/TextGen-v0", prompts=[])


def test_env_uses_the_requested_split():
    train_env = gym.make("textenv/TextGen-v0", prompts=PROMPTS, split="train", eval_fraction=0.25)
    eval_env = gym.make("textenv/TextGen-v0", prompts=PROMPTS, split="eval", eval_fraction=0.25)
    seen_train = {train_env.reset(seed=s)[1]["prompt"] for s in range(60)}
    seen_eval = {eval_env.reset(seed=s)[1]["prompt"] for s in range(60)}
    assert seen_train.isdisjoint(seen_eval)
    assert len(seen_eval) == 5
