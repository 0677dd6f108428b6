"""Pretraining of the package's own small base LMs (``builtin:prose``, ``builtin:sort``).

Reproducible and seeded: the data, the tokenizer, the model initialisation and the batch order
all follow from ``seed``; the training length is a number of steps (not a time budget), so the
same seed and steps give the same weights on the same software stack (up to CPU float
non-associativity across thread counts).

* ``prose``: a byte-level BPE tokenizer (vocab 2000) and a 2-layer, 128-wide GPT-2 trained on the
  CPython documentation corpus (:mod:`textenv.tasks.corpus`), perplexity measured on held-out
  documents. The reference LM of ``textenv/Sentiment-v0``.
* ``sort``: a 12-token character tokenizer and a 2-layer, 64-wide GPT-2 trained on the
  ``textenv/Sort-v0`` format with a mix of right and corrupted answers
  (:mod:`textenv.tasks.sort`), so that the base policy is imperfect.

Each model folder holds ``save_pretrained`` output of a ``GPT2LMHeadModel`` and a
``PreTrainedTokenizerFast`` plus ``pretrain_metrics.json``. Command line::

    textenv pretrain prose --out textenv/data/models/prose --seed 0
    python -m textenv.training.pretrain sort
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from textenv.files import atomic_write_dir
from textenv.lm.models import BUILTIN_MODELS_DIR
from textenv.lm.padding import left_pad_encode
from textenv.lm.sampling import generate
from textenv.lm.tokens import EOS_TOKEN as EOS
from textenv.tasks import corpus, sentiment, sort

__all__ = [
    "BASE_MODELS",
    "TrainConfig",
    "pretrain",
    "train_lm",
    "evaluate_lm",
]

MODELS_DIR = BUILTIN_MODELS_DIR


@dataclass
class TrainConfig:
    """Model shape and optimisation settings of one base LM."""

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    seq_len: int = 64
    batch_size: int = 32
    steps: int = 1500
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    dropout: float = 0.0  # while training only; the saved config has dropout 0
    aligned_frac: float = 0.5  # share of windows that start at the beginning of a text
    eval_every: int = 0  # 0: held-out loss only at the end
    extra: dict = field(default_factory=dict)


# The package's base LMs (``builtin:<name>``). prose's heldout_frac is corpus.HELDOUT_FRAC.
BASE_MODELS: dict[str, TrainConfig] = {
    "prose": TrainConfig(
        n_layer=2, n_embd=128, n_head=4, n_positions=128, seq_len=64, batch_size=32, steps=2000,
        lr=3e-3, dropout=0.1, eval_every=500, extra={"vocab_size": 2000, "heldout_frac": 0.15},
    ),
    "sort": TrainConfig(
        n_layer=2, n_embd=64, n_head=4, n_positions=64, seq_len=64, batch_size=32, steps=1500,
        lr=3e-3, aligned_frac=1.0, extra={"n_train": 40000, "n_heldout": 2000, "p_correct": 1 / 3},
    ),
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# tokenizers and data


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (``tokenizers``), wrapped in a ``PreTrainedTokenizerFast``; EOS = id 0."""

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS
    )


def encode_texts(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One stream ``text_1 EOS text_2 EOS ...`` and the start offset of every text."""
    eos = tokenizer.eos_token_id
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    starts, stream, pos = [], [], 0
    for ids in enc:
        starts.append(pos)
        stream.extend(ids)
        stream.append(eos)
        pos += len(ids) + 1
    return np.asarray(stream, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def _task_data(task: str, cfg: TrainConfig, seed: int):
    """(tokenizer, train_texts, heldout_texts, info) of a base model."""
    if task == "prose":
        docs = corpus.build_corpus()
        train_docs, held_docs = corpus.split_corpus(
            docs, heldout_frac=cfg.extra["heldout_frac"], seed=seed
        )
        train_texts = corpus.corpus_texts(train_docs)
        held_texts = corpus.corpus_texts(held_docs)
        tok = train_bpe_tokenizer(train_texts, cfg.extra["vocab_size"])
        info = {
            "corpus": corpus.corpus_info(docs),
            "train_documents": len(train_docs),
            "heldout_documents": len(held_docs),
            "heldout_document_ids": [d.id for d in held_docs],
        }
        return tok, train_texts, held_texts, info
    if task == "sort":
        p = cfg.extra["p_correct"]
        train_texts = sort.lm_texts(cfg.extra["n_train"], seed=seed, split="train", p_correct=p)
        held_texts = sort.lm_texts(cfg.extra["n_heldout"], seed=seed, split="eval", p_correct=p)
        return sort.build_tokenizer(), train_texts, held_texts, {"p_correct": p}
    raise ValueError(f"unknown base model {task!r}; known: {sorted(BASE_MODELS)}")


# --------------------------------------------------------------------------------------------
# model and training


def make_model(cfg: TrainConfig, tokenizer, seed: int, *, dropout: float = 0.0):
    """A GPT-2 (``gelu_pytorch_tanh``, tied embeddings, EOS = BOS = pad) initialised from
    ``seed``. ``dropout`` (train-time only) applies to residual, embedding and attention."""

    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        activation_function="gelu_pytorch_tanh",
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def _batch(stream, starts, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    n = cfg.seq_len + 1
    last = len(stream) - n
    aligned = rng.random(cfg.batch_size) < cfg.aligned_frac
    random_off = rng.integers(0, last + 1, size=cfg.batch_size)
    ok_starts = starts[starts <= last]
    aligned_off = ok_starts[rng.integers(0, len(ok_starts), size=cfg.batch_size)]
    offs = np.where(aligned, aligned_off, random_off)
    return np.stack([stream[o : o + n] for o in offs])


def _lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def evaluate_lm(model, stream: np.ndarray, seq_len: int, batch_size: int = 64) -> float:
    """Mean next-token NLL (nats) over ``stream``, cut into non-overlapping windows."""

    n = seq_len + 1
    k = max(1, (len(stream) - 1) // seq_len)
    windows = [stream[i * seq_len : i * seq_len + n] for i in range(k)]
    windows = [w for w in windows if len(w) >= 2]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            chunk = windows[i : i + batch_size]
            width = max(len(w) for w in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=bool)
            for j, w in enumerate(chunk):
                ids[j, : len(w)] = w
                mask[j, : len(w)] = True
            x = torch.from_numpy(ids)
            inp = x[:, :-1]
            logits = model(input_ids=inp, attention_mask=torch.ones_like(inp)).logits
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
            )
            m = torch.from_numpy(mask[:, 1:]).reshape(-1)
            total += float(nll[m].sum())
            count += int(m.sum())
    return total / max(1, count)


def train_lm(
    model,
    train_stream: np.ndarray,
    train_starts: np.ndarray,
    cfg: TrainConfig,
    *,
    seed: int,
    steps: int | None = None,
    heldout_stream: np.ndarray | None = None,
    log=None,
) -> dict:
    """AdamW + warmup + cosine LR on random windows (seeded). Returns the loss history."""

    total = cfg.steps if steps is None else steps
    rng = np.random.default_rng([seed, 1])
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    history: list[dict] = []
    ema = None
    model.train()
    t0 = time.perf_counter()
    for step in range(total):
        lr = _lr_at(step, cfg, total)
        for g in opt.param_groups:
            g["lr"] = lr
        x = torch.from_numpy(_batch(train_stream, train_starts, cfg, rng))
        inp = x[:, :-1]
        logits = model(input_ids=inp, attention_mask=torch.ones_like(inp)).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        lv = float(loss.detach())
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        last = step == total - 1
        if step % 100 == 0 or last:
            row = {"step": step, "loss": lv, "loss_ema": ema, "lr": lr,
                   "time_s": time.perf_counter() - t0}  # fmt: skip
            if heldout_stream is not None and cfg.eval_every and step % cfg.eval_every == 0:
                row["heldout_loss"] = evaluate_lm(model, heldout_stream, cfg.seq_len)
                model.train()
            history.append(row)
            if log:
                log(json.dumps(row))
    model.eval()
    return {"history": history, "train_time_s": time.perf_counter() - t0, "final_loss": lv}


# --------------------------------------------------------------------------------------------
# samples


def _sample(model, tokenizer, prompt_texts: list[str], max_new_tokens: int, seed: int):
    """Temperature-1 ancestral samples (one per prompt), left-padded in one batch and drawn with
    the package's sampler (:func:`textenv.lm.sampling.generate`). Returns completions (decoded,
    EOS removed)."""
    max_prompt = model.config.n_positions - max_new_tokens
    ids, mask = left_pad_encode(tokenizer, prompt_texts, max_prompt)
    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id
    out = generate(model, ids, mask, max_new_tokens, eos_token_id=eos, generator=gen)
    return [
        tokenizer.decode([t for t in row[m].tolist() if t != eos])
        for row, m in zip(out.tokens, out.mask)
    ]


def _samples_and_scores(task: str, model, tokenizer, seed: int) -> dict:
    if task == "prose":
        prompts = [
            "The return value",
            "This module provides",
            "If the file",
            "I think the best",
            "A list of",
            "It is a terrible",
        ]
        comps = _sample(model, tokenizer, prompts, sentiment.TASK["max_new_tokens"], seed)
        return {"samples": [{"prompt": p, "completion": c} for p, c in zip(prompts, comps)]}
    if task == "sort":
        n_new = sort.TASK["max_new_tokens"]
        rows = sort.make_prompts("eval", 500, seed=0)
        ps = [r["prompt"] for r in rows]
        comps = _sample(model, tokenizer, ps, n_new, seed)
        scores = np.asarray(sort.gold_score(ps, comps, rows))
        return {
            "eval_gold_mean_t1": float(scores.mean()),
            "eval_gold_frac_perfect_t1": float((scores == 1.0).mean()),
            "eval_gold_n": len(ps),
            "eval_gold_max_new_tokens": n_new,
            "samples": [{"prompt": p, "completion": c} for p, c in zip(ps[:8], comps[:8])],
        }
    return {}


# --------------------------------------------------------------------------------------------
# entry points


def pretrain(
    task: str,
    out_dir: str,
    *,
    seed: int = 0,
    steps: int | None = None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Train the base LM ``task`` (``"prose"`` or ``"sort"``) and save it to ``out_dir``.

    Writes the model, the tokenizer and ``pretrain_metrics.json`` into ``out_dir`` and returns
    the metrics: held-out loss/perplexity, parameter count, train time, samples (and for
    ``sort`` the mean gold score of temperature-1 samples on the eval prompts).
    """

    if task not in BASE_MODELS:
        raise ValueError(f"unknown base model {task!r}; known: {sorted(BASE_MODELS)}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    cfg = BASE_MODELS[task]
    n_steps = cfg.steps if steps is None else int(steps)
    torch.manual_seed(seed)  # model init (again in make_model) and train-time dropout

    t_data = time.perf_counter()
    tokenizer, train_texts, held_texts, info = _task_data(task, cfg, seed)
    train_stream, train_starts = encode_texts(tokenizer, train_texts)
    held_stream, _ = encode_texts(tokenizer, held_texts)
    data_time = time.perf_counter() - t_data
    if log:
        log(f"[pretrain {task}] data: {len(train_stream)} train / {len(held_stream)} held-out "
            f"tokens, vocab {len(tokenizer)}, {data_time:.1f}s")  # fmt: skip

    model = make_model(cfg, tokenizer, seed, dropout=cfg.dropout)
    n_params = sum(p.numel() for p in model.parameters())
    res = train_lm(
        model, train_stream, train_starts, cfg, seed=seed, steps=n_steps,
        heldout_stream=held_stream, log=log,
    )  # fmt: skip
    t_eval = time.perf_counter()
    held_loss = evaluate_lm(model, held_stream, cfg.seq_len)
    train_loss = evaluate_lm(model, train_stream[: len(held_stream)], cfg.seq_len)
    eval_time = time.perf_counter() - t_eval

    metrics = {
        "task": task,
        "seed": seed,
        "steps": n_steps,
        "threads": torch.get_num_threads(),
        "config": {k: v for k, v in asdict(cfg).items() if k != "steps"},
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "train_tokens": int(len(train_stream)),
        "heldout_tokens": int(len(held_stream)),
        "tokens_seen": n_steps * cfg.batch_size * cfg.seq_len,
        "data_time_s": round(data_time, 2),
        "train_time_s": round(res["train_time_s"], 2),
        "eval_time_s": round(eval_time, 2),
        "final_train_batch_loss": res["final_loss"],
        "train_loss": train_loss,
        "train_perplexity": math.exp(train_loss),
        "heldout_loss": held_loss,
        "heldout_perplexity": math.exp(held_loss),
        "history": res["history"],
        "versions": _versions(),
        **info,
    }
    metrics.update(_samples_and_scores(task, model, tokenizer, seed))

    _disable_dropout(model)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")

    # The whole folder at once: a kill leaves the previous model, never half of a new one.
    out = atomic_write_dir(out_dir, write, replaces=["pretrain_metrics.json"])
    if log:
        summary = {k: metrics.get(k) for k in (
            "parameters", "train_time_s", "heldout_perplexity", "eval_gold_mean_t1")}  # fmt: skip
        log(f"[pretrain {task}] saved to {out}: {json.dumps(summary)}")
    return metrics


def _disable_dropout(model) -> None:
    """Dropout 0 in the saved config (and in the live modules), whatever was trained with."""

    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _versions() -> dict:
    import sys

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
