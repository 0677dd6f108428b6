"""Built-in task data: the corpus, the shipped prompts, the gold scorers and the model folders."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from textenv.tasks import corpus, sentiment, sort

DATA = Path(__file__).resolve().parents[1] / "textenv" / "data"
MODEL_DIRS = {"prose": DATA / "models" / "prose", "sort": DATA / "models" / "sort"}
from textenv.tasks import TaskSpec  # noqa: E402

TASKS = {"sentiment": sentiment, "sort": sort}


# ---------------------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def docs():
    return corpus.build_corpus()


def test_corpus_is_real_text_and_deterministic(docs):
    assert len(docs) > 300
    assert sum(len(d.text) for d in docs) > 1_000_000
    ids = [d.id for d in docs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert any(i.startswith("topic:") for i in ids) and any(i.startswith("module:") for i in ids)
    # Nothing from the skipped families.
    skipped = ("tkinter", "idlelib", "turtle", "turtledemo", "test", "antigravity", "this")
    for i in ids:
        if i.startswith("module:"):
            parts = i.removeprefix("module:").split(".")
            assert parts[0] not in skipped and not any(p.startswith("_") for p in parts), i
    # A fresh walk (new isolated interpreter) gives the same text.
    again = corpus._stdlib_docstrings()
    for d in docs[-20:]:
        if d.id.startswith("module:"):
            assert d.id.removeprefix("module:") in again


def test_corpus_split_is_deterministic_and_disjoint(docs):
    train, held = corpus.split_corpus(docs, seed=0)
    train2, held2 = corpus.split_corpus(docs, seed=0)
    assert [d.id for d in train] == [d.id for d in train2]
    assert [d.id for d in held] == [d.id for d in held2]
    assert not {d.id for d in train} & {d.id for d in held}
    assert len(train) + len(held) == len(docs)
    assert 0.08 < len(held) / len(docs) < 0.25
    # Each document's side depends only on its own id: a subset splits the same way.
    sub_train, sub_held = corpus.split_corpus(docs[::3], seed=0)
    assert {d.id for d in sub_held} == {d.id for d in held} & {d.id for d in docs[::3]}
    _, held_other = corpus.split_corpus(docs, seed=1)
    assert {d.id for d in held_other} != {d.id for d in held}


def test_paragraph_texts_have_no_blank_lines(docs):
    texts = corpus.corpus_texts(docs[:20])
    assert texts and all(t.strip() and "\n\n" not in t for t in texts)


# ---------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shipped_prompts_train_eval_disjoint(name):
    mod = TASKS[name]
    train, evl = mod.prompts("train"), mod.prompts("eval")
    assert len(train) >= 2000 and 400 <= len(evl) <= 600
    tp, ep = [r["prompt"] for r in train], [r["prompt"] for r in evl]
    assert len(set(tp)) == len(tp) and len(set(ep)) == len(ep)
    assert not set(tp) & set(ep)
    with pytest.raises(ValueError):
        mod.prompts("test")


def test_sentiment_prompts_come_from_different_heldout_documents():
    train, evl = sentiment.prompts("train"), sentiment.prompts("eval")
    train_docs, eval_docs = {r["source"] for r in train}, {r["source"] for r in evl}
    assert not train_docs & eval_docs
    # Only documents the prose LM did not train on.
    metrics = json.loads((MODEL_DIRS["prose"] / "pretrain_metrics.json").read_text())
    assert (train_docs | eval_docs) <= set(metrics["heldout_document_ids"])


def test_sentiment_prompts_fit_the_prompt_budget():
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(MODEL_DIRS["prose"]))
    limit = sentiment.TASK["max_prompt_tokens"]
    rows = sentiment.prompts("train")[:300] + sentiment.prompts("eval")
    lengths = [len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert max(lengths) <= limit and min(lengths) >= 1
    assert all(3 <= len(r["prompt"].split()) <= 8 for r in rows)


def test_sort_prompts_are_reproducible_and_split_by_hash():
    assert sort.prompts("eval") == sort.make_prompts("eval", 500, seed=0)
    assert sort.prompts("train")[:50] == sort.make_prompts("train", 5000, seed=0)[:50]
    for r in sort.prompts("eval"):
        digits = r["prompt"].removesuffix(sort.SEPARATOR)
        assert sort.is_eval_digits(digits) and r["target"] == "".join(sorted(digits))
    assert not any(sort.is_eval_digits(r["prompt"][:-1]) for r in sort.prompts("train")[:500])
    # The LM pretraining texts of one side never use digit strings of the other side.
    for text in sort.lm_texts(200, seed=0, split="train"):
        assert not sort.is_eval_digits(text.split(sort.SEPARATOR)[0])


# ---------------------------------------------------------------------------------- scorers


def test_vader_gold_score_on_obvious_sentences():
    comps = [
        "This is wonderful, I love it and it works great!",
        "This is terrible, awful and I hate it.",
        "The function returns a list of integers.",
        "",
    ]
    pos, neg, neutral, empty = sentiment.gold_score(["p"] * 4, comps, [{}] * 4)
    assert pos > 0.5 and neg < -0.5 and neutral == 0.0 and empty == 0.0
    # Only the completion is scored; EOS is not text.
    assert sentiment.gold_score(["I hate this"], ["a list."], [{}]) == [0.0]
    assert sentiment.gold_score(["p"], [comps[0] + "<|endoftext|>"], [{}]) == [pos]
    with pytest.raises(ValueError):
        sentiment.gold_score(["a", "b"], ["c"], [{}])


def test_sort_gold_score_perfect_partial_wrong():
    p = ["52814>"]
    assert sort.target(p[0]) == "12458"
    assert sort.gold_score(p, ["12458"], [{}]) == [1.0]
    assert sort.gold_score(p, ["12458<|endoftext|>"], [{}]) == [1.0]
    assert sort.gold_score(p, ["12485"], [{}]) == [pytest.approx(3 / 5)]
    assert sort.gold_score(p, ["124589"], [{}]) == [pytest.approx(5 / 6)]  # too long costs
    assert sort.gold_score(p, ["52814"], [{}]) == [pytest.approx(1 / 5)]  # input copied
    assert sort.gold_score(p, ["99999"], [{}]) == [0.0]
    assert sort.gold_score(p, [""], [{}]) == [0.0]
    assert sort.gold_score(p, ["1>458"], [{}]) == [pytest.approx(4 / 5)]
    scores = sort.gold_score(["90>"] * 3, ["09", "90", "0"], None)
    assert scores == [1.0, 0.0, 0.5]


# ---------------------------------------------------------------------------------- TASK dicts


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_defaults_are_json_and_resolve(name):
    task = TASKS[name].TASK
    assert isinstance(task, TaskSpec) and task.name == name
    json.dumps(dict(task))
    for key in ("max_prompt_tokens", "max_new_tokens", "reference", "reward", "gold", "prompts",
                "kl_coef"):  # fmt: skip
        assert key in task
    assert task["reference"] == f"builtin:{ {'sentiment': 'prose', 'sort': 'sort'}[name] }"
    for key in ("reward", "gold", "prompts"):
        if task[key].startswith("builtin:"):  # a shipped reward-model folder
            from textenv.rewards import load_reward

            assert callable(load_reward(task[key]))
            continue
        module, func = task[key].split(":")
        assert callable(getattr(importlib.import_module(module), func))
    assert task["max_new_tokens"] <= (16 if name == "sort" else 32)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_docstrings_have_gymnasium_sections(name):
    doc = TASKS[name].__doc__
    for section in ("Description", "Action Space", "Observation Space", "Rewards",
                    "Starting State", "Episode End", "Arguments", "Version History"):  # fmt: skip
        assert f"## {section}" in doc, section


# ---------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", sorted(MODEL_DIRS))
def test_shipped_model_folders_load_offline(name):
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = MODEL_DIRS[name]
    model = GPT2LMHeadModel.from_pretrained(str(folder), local_files_only=True)
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    cfg = model.config
    assert cfg.vocab_size == len(tok)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert cfg.eos_token_id == cfg.bos_token_id == cfg.pad_token_id == tok.eos_token_id
    assert cfg.activation_function == "gelu_pytorch_tanh"
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    task = sentiment.TASK if name == "prose" else sort.TASK
    assert cfg.n_positions >= max(64, task["max_prompt_tokens"] + task["max_new_tokens"])
    metrics = json.loads((folder / "pretrain_metrics.json").read_text())
    n_params = sum(p.numel() for p in model.parameters())
    assert metrics["parameters"] == n_params
    if name == "prose":
        assert 500_000 <= n_params <= 2_000_000 and len(tok) == 2000
        assert metrics["heldout_perplexity"] < 130
    else:
        assert n_params < 200_000 and len(tok) == 12
        assert 0.2 <= metrics["eval_gold_mean_t1"] <= 0.6
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 8 * 2**20


def test_sort_tokenizer_is_one_token_per_character():
    tok = sort.build_tokenizer()
    ids = tok("52814>12458", add_special_tokens=False)["input_ids"]
    assert len(ids) == 11 and tok.decode(ids) == "52814>12458"
    assert tok.eos_token_id == 0 and len(tok) == 12


def test_sentiment_defaults_to_the_shipped_learned_reward_model():
    import gymnasium as gym

    from textenv.rewards import SequenceClassifierReward

    env = gym.make("textenv/Sentiment-v0").unwrapped
    assert isinstance(env.core.reward_fn, SequenceClassifierReward)
    env.reset(seed=0)
    env.set_action_logprob(-1.0)
    *_, info = env.step(env.tokenizer.eos_token_id)
    assert {"rm_score", "gold_score"} <= set(info)  # learned proxy, gold still reported
    pairs = [("The day was", " wonderful, happy and great."), ("The day was", " awful and sad.")]
    good, bad = env.core.reward_fn([p for p, _ in pairs], [c for _, c in pairs], [{}, {}])
    assert good > bad
