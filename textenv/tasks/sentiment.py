"""``textenv/Sentiment-v0``: continue a piece of real English text with positive sentiment.

## Description
The classic RLHF demo task (Ziegler et al. 2019) scaled to a CPU: the prompt is a short window
of a sentence (3 to 8 plain words, at most 16 tokens; often the sentence start) from the CPython
documentation corpus (:mod:`textenv.tasks.corpus`), the policy writes a continuation of up to
24 tokens, and the gold score is the VADER compound sentiment of that continuation. The reference LM
(``builtin:prose``, a 2-layer GPT-2 with a 2000-token byte-level BPE vocabulary) was
pretrained on the *train* documents of the corpus; the prompts come only from its
*held-out* documents, so the reference LM has not memorised their continuations. Technical
documentation is mostly neutral: sampled at temperature 1 on the eval prompts, the reference
LM's mean gold score is 0.01 (75% exactly 0, 15% positive, 10% negative; 62% of its
completions end with EOS before 24 tokens), so there is a lot to gain.

## Action Space
``Discrete(2000)``: the next token id of the ``builtin:prose`` tokenizer; id 0 is
``<|endoftext|>`` (EOS, also the pad id).

## Observation Space
``Dict(input_ids=Box(0, 1999, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
``L = max_prompt_tokens + max_new_tokens`` (16 + 24 = 40), laid out as
``[left-padded prompt | generated tokens | right padding]``; the pad id is the EOS id and the
attention mask is 0 on padding.

## Rewards
``RM(prompt, completion) - beta * KL``. The registered reward model is a learned one shipped
with the package (``builtin:sentiment-rm``: the base LM fine-tuned with a score head on 4548 pairs
of base-LM completions labelled by VADER + Bradley-Terry noise, T = 0.1; held-out pair accuracy
0.703 against a noise ceiling of 0.924; the recipe is the reward-model stage of
``textenv run --threads 1 --n-prompts 2048``), so optimising the env is RLHF proper: a learned
proxy is maximised while ``info["gold_score"]`` reports the gold scorer (:func:`gold_score`,
VADER compound in ``[-1, 1]`` of the completion alone). Pass
``reward="textenv.tasks.sentiment:gold_score"`` to optimise the gold score directly. ``KL`` is
the summed per-token estimate against the frozen reference LM, ``beta = kl_coef`` (or an
adaptive controller); by default it is all paid at the final step.

Ties: VADER gives exactly 0 to any text without lexicon words, which is most completions of
the reference LM (three quarters; about half of general text). Wherever gold scores are *compared* (simulated
preference labelling, win rates) equal scores are an explicit tie: the labeller reports a
tie (drop the pair, or label it 0.5), never a silent preference for the first item.

## Starting State
A prompt drawn uniformly from the ``train`` split (``textenv/data/tasks/sentiment/
train.jsonl``, 2292 prompts from 48 documents), or with ``split="eval"`` from the 500
``eval`` prompts (18 documents).
Train and eval prompts come from different held-out documents (the held-out documents are
divided between them by a hash of the document id), so eval measures generalisation to
new text.

## Episode End
Terminated when the policy emits EOS; truncated after ``max_new_tokens`` (24) tokens.

## Arguments
The env kwargs (``gym.make("textenv/Sentiment-v0", ...)``) override the defaults in
:data:`TASK`: ``max_prompt_tokens``, ``max_new_tokens``, ``reference``, ``reward``,
``gold``, ``prompts``, ``kl_coef``, and the env's own (``kl_reward``, ``device``, ...).

## Version History
* v0: initial version.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from textenv.lm.tokens import EOS_TOKEN as EOS
from textenv.tasks.corpus import build_corpus, paragraphs, split_corpus
from textenv.tasks.spec import TaskSpec

__all__ = [
    "TASK",
    "gold_score",
    "prompts",
    "extract_prompts",
    "write_prompt_files",
]

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "tasks" / "sentiment"
EVAL_DOC_FRACTION = 0.25
N_TRAIN, N_EVAL = 4000, 500

TASK = TaskSpec(
    name="sentiment",
    env_id="textenv/Sentiment-v0",
    summary="continue English prose with positive sentiment (learned RM, VADER gold)",
    max_prompt_tokens=16,
    max_new_tokens=24,
    reference="builtin:prose",
    reward="builtin:sentiment-rm",
    gold="textenv.tasks.sentiment:gold_score",
    prompts="textenv.tasks.sentiment:prompts",
    kl_coef=0.05,
)

_ANALYZER = None


def _analyzer():
    global _ANALYZER
    if _ANALYZER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _ANALYZER = SentimentIntensityAnalyzer()
    return _ANALYZER


def gold_score(
    prompts: list[str], completions: list[str], metadata: list[dict] | None = None
) -> list[float]:
    """VADER compound sentiment of each completion (the prompt is not scored), in ``[-1, 1]``.

    About half of all texts score exactly 0 (no lexicon word); compare scores with explicit
    ties. ``prompts`` and ``metadata`` are accepted for the reward-callable signature.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    sia = _analyzer()
    return [
        float(sia.polarity_scores(c.replace(EOS, " ").strip())["compound"]) for c in completions
    ]


# --------------------------------------------------------------------------------------------
# prompt files (built once from the corpus and shipped)

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD_OK = re.compile(r"^[A-Za-z][A-Za-z'\-]*[,;:]?$")


def _unit(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def _is_prose(paragraph: str) -> bool:
    lines = paragraph.split("\n")
    if any(line.startswith((" ", "\t", ">>>", "...")) for line in lines):
        return False  # code blocks, doctests, tables
    letters = sum(ch.isalpha() or ch.isspace() for ch in paragraph)
    return letters >= 0.85 * len(paragraph)


def _sentences(text: str) -> list[list[str]]:
    """Word lists of the prose sentences of a document (code and tables skipped)."""
    out = []
    for para in paragraphs(text):
        if not _is_prose(para):
            continue
        for sent in _SENT_SPLIT.split(" ".join(para.split())):
            words = sent.split()
            if len(words) < 6:
                continue
            out.append(words)
    return out


def extract_prompts(docs, tokenizer, *, seed: int, max_tokens: int) -> list[dict]:
    """Short windows of the prose sentences of ``docs``: each sentence is cut into consecutive
    windows of 4 to 8 words (seeded; the first window is the sentence start), each window cut
    back at its first word that is not a plain word and then word by word to at most
    ``max_tokens`` tokens; windows under 3 words are dropped. Deduplicated."""
    rng = np.random.default_rng([seed, 11])
    out, seen = [], set()
    for doc in docs:
        for words in _sentences(doc.text):
            pos = 0
            while pos < len(words):
                k = int(rng.integers(4, 9))
                head = words[pos : pos + k]
                pos += k
                for j, w in enumerate(head):
                    if not _WORD_OK.match(w):
                        head = head[:j]
                        break
                while head and _n_tokens(tokenizer, " ".join(head)) > max_tokens:
                    head = head[:-1]
                text = " ".join(head).rstrip(",;:")
                if len(head) < 3 or text in seen:
                    continue
                seen.add(text)
                out.append({"prompt": text, "source": doc.id})
    return out


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def write_prompt_files(
    tokenizer_dir: str | Path | None = None, out_dir: str | Path | None = None, *, seed: int = 0
) -> dict:
    """Build the train/eval prompt files from the held-out corpus documents.

    The held-out documents (the ones ``builtin:prose`` did not train on) are divided by a hash
    of their id into eval documents (about a quarter) and train documents; prompts are taken
    from each side separately, so no document gives both train and eval prompts."""
    from transformers import PreTrainedTokenizerFast  # only when rebuilding the prompt files

    tok_dir = tokenizer_dir or Path(__file__).resolve().parents[1] / "data" / "models" / "prose"
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    _, held = split_corpus(build_corpus(), seed=seed)
    eval_docs = [d for d in held if _unit(f"sentiment-eval:{seed}:{d.id}") < EVAL_DOC_FRACTION]
    train_docs = [d for d in held if _unit(f"sentiment-eval:{seed}:{d.id}") >= EVAL_DOC_FRACTION]
    max_tokens = int(TASK["max_prompt_tokens"])
    out = Path(out_dir) if out_dir is not None else DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    # Eval first; a train window whose text also occurs on the eval side (short common
    # phrases) is dropped, so the two splits share neither documents nor prompt texts.
    taken: set[str] = set()
    for i, (split, docs, n) in (
        (1, ("eval", eval_docs, N_EVAL)),
        (0, ("train", train_docs, N_TRAIN)),
    ):
        rows = extract_prompts(docs, tokenizer, seed=seed + i, max_tokens=max_tokens)
        rows = [r for r in rows if r["prompt"] not in taken]
        rng = np.random.default_rng([seed, 23, i])
        if len(rows) > n:
            keep = np.sort(rng.choice(len(rows), size=n, replace=False))
            rows = [rows[j] for j in keep]
        taken |= {r["prompt"] for r in rows}
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        counts[split] = {"prompts": len(rows), "documents": len({r["source"] for r in rows})}
    return counts


_PROMPTS: dict[str, list[dict]] = {}


def prompts(split: str = "train") -> list[dict]:
    """The shipped prompts of a split (``"train"`` or ``"eval"``): dicts with ``prompt`` and
    ``source`` (the corpus document id, as metadata)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    if split not in _PROMPTS:
        with open(DATA_DIR / f"{split}.jsonl", encoding="utf-8") as f:
            _PROMPTS[split] = [json.loads(line) for line in f if line.strip()]
    return [dict(row) for row in _PROMPTS[split]]
