"""Training a reward model on preference pairs (Bradley–Terry), saved for the env to load.

Loss per pair (TRL's RewardTrainer): ``−log σ(r_c − r_r − margin)`` (``margin`` from the data,
0 where absent) plus an optional centering term ``center_coef · mean((r_c + r_r)²)`` that keeps
rewards near 0. Pairs are split into train / validation **by prompt** (pairs of one prompt —
e.g. the C(K, 2) pairs of one ranking — never straddle the split, as in InstructGPT). Each epoch
logs loss and accuracy; training stops early when the validation loss has not improved for
``patience`` epochs, and the best epoch's weights are kept. Dropout is off throughout (RLHF
implementation details).

The result is a Hugging Face folder — ``save_pretrained`` of a one-label
``AutoModelForSequenceClassification`` (safetensors) plus its tokenizer and
``training_metrics.json`` — that :func:`textenv.rewards.load_reward` reads back: pass the folder
as the env's ``reward`` spec. Texts are encoded exactly as the env's reward wrapper does
(``prompt + completion``, the model's own tokenizer, left padding, position ids that skip the
padding); the tokenizer is saved with ``truncation_side="left"`` so an over-long text loses its
start, not the completion. Optional normalisation (``normalize=True``) stores the mean and std of
the trained RM's scores on reference samples as config ``reward_mean`` / ``reward_std``, so the
loaded reward has mean 0 and std 1 there.

Backbones: any spec of :mod:`textenv.lm.models` — ``"builtin:prose"`` (default: the Sentiment
task's base LM, so the RM starts from the LM it will judge, as InstructGPT starts its RM from
the SFT model), another LM or RM folder, a hub name, or ``"tiny-rm"`` / ``"tiny"`` for tests.
A causal-LM checkpoint gets a fresh one-output score head.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from textenv.lm.models import (
    BUILTIN_MODELS_DIR,
    ModelLoadError,
    load_sequence_classifier,
    load_tokenizer,
    parse_tiny_spec,
)
from textenv.lm.sampling import position_ids_from_mask
from textenv.preferences import PreferencePair, read_preferences
from textenv.rewards import load_reward, score

__all__ = [
    "load_backbone",
    "train_reward_model",
    "evaluate_reward",
    "split_by_prompt",
]

DEFAULT_BACKBONE = "builtin:prose"


# --------------------------------------------------------------------------- model + data


def load_backbone(spec: str, device: str = "cpu") -> tuple[Any, Any]:
    """A fresh, trainable one-label sequence classifier and its tokenizer (pad token set,
    left padding and left truncation)."""
    if spec.startswith("tiny"):
        kind, _ = parse_tiny_spec(spec)
        rm_spec = spec if kind == "tiny-rm" else "tiny-rm" + spec[len("tiny") :]
        model = copy.deepcopy(load_sequence_classifier(rm_spec))
        tokenizer = copy.deepcopy(load_tokenizer(rm_spec))
    else:
        if spec.startswith("builtin:"):
            source = str(BUILTIN_MODELS_DIR / spec.removeprefix("builtin:"))
            if not Path(source).is_dir():
                raise ModelLoadError(f"no built-in model {spec!r} (looked in {source})")
        else:
            source = spec
        local = Path(source).expanduser().is_dir()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "score.weight newly initialised" is expected here
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=1, local_files_only=local
            )
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"could not load a reward-model backbone from {spec!r}: {exc}"
            ) from exc
        finally:
            hf_logging.set_verbosity(verbosity)
    if tokenizer.eos_token_id is None and tokenizer.pad_token_id is None:
        raise ModelLoadError(f"tokenizer of {spec!r} has neither a pad nor an EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    # Saved with the tokenizer, so the env's loader pads and truncates the same way.
    tokenizer.init_kwargs.update(padding_side="left", truncation_side="left")
    for key in ("is_local", "local_files_only"):  # loader bookkeeping, not tokenizer settings
        tokenizer.init_kwargs.pop(key, None)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.config.num_labels != 1:
        raise ModelLoadError(f"backbone {spec!r} has {model.config.num_labels} labels, not 1")
    model.requires_grad_(True)
    model.to(device)
    model.eval()  # no dropout
    return model, tokenizer


def _max_positions(model: Any) -> int | None:
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _Encoder:
    """Tokenises ``prompt + completion`` once per distinct text; pads batches on the left."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache: dict[str, list[int]] = {}
        self.fill = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            enc = self.tokenizer(new, truncation=True, max_length=self.max_length)["input_ids"]
            for t, ids in zip(new, enc):
                self.cache[t] = list(ids) or [self.fill]  # an empty text: score EOS alone
        return [self.cache[t] for t in texts]

    def batch(self, texts: Sequence[str], device: Any) -> tuple[Any, Any]:

        seqs = self.ids(texts)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            input_ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s) :] = 1
        return input_ids.to(device), mask.to(device)


def _forward(model: Any, encoder: _Encoder, texts: Sequence[str], device: Any) -> Any:

    input_ids, mask = encoder.batch(texts, device)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    return out.logits[:, 0].float()


def _score_all(
    model: Any, encoder: _Encoder, texts: Sequence[str], device: Any, batch_size: int = 256
) -> np.ndarray:

    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            out.append(_forward(model, encoder, texts[s : s + batch_size], device).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def split_by_prompt(
    pairs: Sequence[Any], val_fraction: float, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """Train / validation pairs, whole prompts on one side (about ``val_fraction`` of pairs).
    With a single prompt, pairs are split individually."""
    if val_fraction <= 0 or len(pairs) < 2:
        return list(pairs), []
    if not val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 5])
    prompts = list(dict.fromkeys(p.prompt for p in pairs))
    target = max(1, round(val_fraction * len(pairs)))
    if len(prompts) < 2:
        order = rng.permutation(len(pairs))
        val_idx = set(order[:target].tolist())
        return (
            [p for i, p in enumerate(pairs) if i not in val_idx],
            [p for i, p in enumerate(pairs) if i in val_idx],
        )
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.prompt] = counts.get(p.prompt, 0) + 1
    val_prompts: set[str] = set()
    n_val = 0
    for i in rng.permutation(len(prompts)):
        if n_val >= target or len(val_prompts) == len(prompts) - 1:
            break
        val_prompts.add(prompts[i])
        n_val += counts[prompts[i]]
    return (
        [p for p in pairs if p.prompt not in val_prompts],
        [p for p in pairs if p.prompt in val_prompts],
    )


def _pair_metrics(rc: np.ndarray, rr: np.ndarray, margins: np.ndarray) -> dict[str, float]:
    d = rc - rr - margins
    loss = float(np.mean(np.logaddexp(0.0, -d))) if d.size else float("nan")
    acc = float(np.mean((rc > rr) + 0.5 * (rc == rr))) if d.size else float("nan")
    return {"loss": loss, "accuracy": acc}


def evaluate_reward(
    reward: Any, pairs: Any, *, use_margin: bool = False, on_error: str = "raise"
) -> dict[str, float]:
    """Accuracy (ties count ½) and Bradley–Terry loss of a reward function / spec / RM folder
    on preference pairs (a source :func:`textenv.preferences.read_preferences` accepts)."""

    if not (isinstance(pairs, list) and all(isinstance(p, PreferencePair) for p in pairs)):
        pairs = read_preferences(pairs, on_error=on_error)
    fn = load_reward(reward) if isinstance(reward, str) else reward
    prompts = [p.prompt for p in pairs]
    meta = [dict(p.metadata) for p in pairs]
    s = score(fn, prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs], meta * 2)
    n = len(pairs)
    margins = np.array([(p.margin or 0.0) if use_margin else 0.0 for p in pairs])
    return {**_pair_metrics(s[:n], s[n:], margins), "n": n}


# --------------------------------------------------------------------------- training


def train_reward_model(
    pairs: Any,
    out_dir: str | Path,
    *,
    backbone: str = DEFAULT_BACKBONE,
    val_pairs: Any = None,
    val_fraction: float = 0.1,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    patience: int = 2,
    center_coef: float = 0.0,
    use_margin: bool = True,
    max_length: int = 256,
    normalize: bool = True,
    normalize_samples: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Train a Bradley–Terry reward model on ``pairs`` and save it to ``out_dir``.

    ``pairs``: a preference source (path, rows, dataset, or :class:`PreferencePair` list).
    ``val_pairs``: explicit validation pairs; otherwise ``val_fraction`` of the prompts are held
    out (0: no validation, no early stopping). ``normalize_samples``: ``(prompt, completion)``
    reference samples for the normalisation (default: the distinct training completions, which
    are samples of the policy being labelled). Returns the metrics (also written to
    ``out_dir/training_metrics.json``).

    Note: frozen models are cached per spec in :mod:`textenv.lm.models`; if this process already
    loaded ``out_dir`` with :func:`textenv.rewards.load_reward`, that cached copy is stale.
    """

    def as_pairs(source: Any) -> list[PreferencePair]:
        if isinstance(source, list) and all(isinstance(p, PreferencePair) for p in source):
            return source
        return list(read_preferences(source, on_error=on_error))

    all_pairs = as_pairs(pairs)
    if val_pairs is not None:
        train, val = all_pairs, as_pairs(val_pairs)
    else:
        train, val = split_by_prompt(all_pairs, val_fraction, seed)
    if not train:
        raise ValueError("no training pairs")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be ≥ 1")

    out = Path(out_dir)
    torch.manual_seed(seed)
    model, tokenizer = load_backbone(backbone, device)
    positions = _max_positions(model)
    max_length = min(max_length, positions) if positions else max_length
    encoder = _Encoder(tokenizer, max_length)

    def texts(ps: list[PreferencePair]) -> tuple[list[str], list[str], np.ndarray]:
        return (
            [p.prompt + p.chosen for p in ps],
            [p.prompt + p.rejected for p in ps],
            np.array([(p.margin or 0.0) if use_margin else 0.0 for p in ps], dtype=np.float32),
        )

    tr_c, tr_r, tr_m = texts(train)
    va_c, va_r, va_m = texts(val)

    def validate() -> dict[str, float]:
        rc, rr = _score_all(model, encoder, va_c, device), _score_all(model, encoder, va_r, device)
        return _pair_metrics(rc, rr, va_m)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
    )
    rng = np.random.default_rng([seed, 17])
    history: list[dict[str, Any]] = []
    if val:
        history.append({"epoch": 0, **{f"val_{k}": v for k, v in validate().items()}})
    best_loss, best_epoch, best_state, bad = math.inf, 0, None, 0
    start = time.perf_counter()
    n_batches = math.ceil(len(train) / batch_size)
    stopped_early = False
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train))
        sum_loss = sum_acc = 0.0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
        for b in range(n_batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            batch_texts = [tr_c[i] for i in idx] + [tr_r[i] for i in idx]
            r = _forward(model, encoder, batch_texts, device)
            rc, rr = r[: len(idx)], r[len(idx) :]
            margin = torch.as_tensor(tr_m[idx], device=r.device)
            bt = -torch.nn.functional.logsigmoid(rc - rr - margin).mean()
            loss = bt + center_coef * ((rc + rr) ** 2).mean() if center_coef else bt
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            acc = ((rc > rr).float() + 0.5 * (rc == rr).float()).mean().item()
            sum_loss += bt.item() * len(idx)
            sum_acc += acc * len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{bt.item():.3f}", acc=f"{acc:.2f}")
        if bar is not None:
            bar.close()
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": sum_loss / len(train),
            "train_accuracy": sum_acc / len(train),
            "time_s": time.perf_counter() - start,
        }
        if val:
            row.update({f"val_{k}": v for k, v in validate().items()})
        history.append(row)
        if progress:
            shown = "  ".join(
                f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "time_s")
            )
            print(f"epoch {epoch}: {shown}  ({row['time_s']:.1f} s)", flush=True)
        if not val:
            continue
        if row["val_loss"] < best_loss - 1e-4:
            best_loss, best_epoch, bad = row["val_loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                stopped_early = True
                break
    train_time = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    final_epoch = best_epoch if val else len(history)

    mean, std = 0.0, 1.0
    if normalize:
        if normalize_samples is None:
            samples = list(dict.fromkeys(tr_c + tr_r))
        else:
            samples = [p + c for p, c in normalize_samples]
        scores = _score_all(model, encoder, samples, device)
        mean = float(scores.mean())
        std = float(scores.std()) if scores.size > 1 and scores.std() > 1e-8 else 1.0
    model.config.reward_mean = mean
    model.config.reward_std = std

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    best = next((h for h in history if h["epoch"] == final_epoch), history[-1])
    metrics: dict[str, Any] = {
        "backbone": backbone,
        "out_dir": str(out),
        "n_train": len(train),
        "n_val": len(val),
        "epochs_run": history[-1]["epoch"],
        "best_epoch": final_epoch,
        "stopped_early": stopped_early,
        "train_time_s": train_time,
        "val_accuracy": best.get("val_accuracy"),
        "val_loss": best.get("val_loss"),
        "train_accuracy": best.get("train_accuracy"),
        "reward_mean": mean,
        "reward_std": std,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": {
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "epochs": epochs,
            "patience": patience,
            "center_coef": center_coef,
            "use_margin": use_margin,
            "max_length": max_length,
            "val_fraction": val_fraction if val_pairs is None else None,
            "seed": seed,
        },
        "history": history,
    }
    (out / "training_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
