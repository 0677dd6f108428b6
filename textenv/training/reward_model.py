"""Training a reward model on preference pairs (Bradley–Terry), saved for the env to load.

:func:`train_reward` trains either kind from one :class:`RewardModelConfig`;
:func:`train_reward_model` is the ``backbone`` kind (a fine-tuned LM with a score head), the
``fused`` kind is in :mod:`textenv.training.fused_head`. Both run the one loop of
:mod:`textenv.training.bradley_terry` (loss ``−log σ(r_c − r_r − margin)`` plus an optional
centering term, TRL's RewardTrainer; early stopping on the validation loss, best epoch kept) and
report the same metrics. Pairs are split into train / validation **by prompt** (pairs of one
prompt — e.g. the C(K, 2) pairs of one ranking — never straddle the split, as in InstructGPT).
Dropout is off throughout (RLHF implementation details).

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from textenv.files import atomic_write_dir, atomic_write_json, check_dir_target
from textenv.lm.models import (
    BUILTIN_MODELS_DIR,
    ModelLoadError,
    load_sequence_classifier,
    load_tokenizer,
    parse_tiny_spec,
)
from textenv.lm.padding import classifier_logits_left_padded, encode_texts, left_pad
from textenv.rewards import load_reward, score
from textenv.training.bradley_terry import (
    DEFAULT_BACKBONE,
    RM_MARKERS,
    RewardModelConfig,
    as_pairs,
    fit_bradley_terry,
    margins,
    pair_metrics,
    reward_normalisation,
    split_by_prompt,
    summary,
    training_pairs,
)
from textenv.training.fused_head import train_fused_head

__all__ = [
    "DEFAULT_BACKBONE",
    "RewardModelConfig",
    "load_backbone",
    "train_reward",
    "train_reward_model",
    "evaluate_reward",
    "split_by_prompt",
]


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
            # The env's reward path encodes the same way (an empty text: score EOS alone).
            enc = encode_texts(
                self.tokenizer, new, self.max_length, special_tokens=True, empty_id=self.fill
            )
            self.cache.update(zip(new, enc))
        return [self.cache[t] for t in texts]

    def batch(self, texts: Sequence[str], device: Any) -> tuple[Any, Any]:
        return left_pad(self.ids(texts), self.tokenizer.pad_token_id, device=device)


def _forward(model: Any, encoder: _Encoder, texts: Sequence[str], device: Any) -> Any:
    input_ids, mask = encoder.batch(texts, device)
    return classifier_logits_left_padded(model, input_ids, mask)[:, 0].float()


def _score_all(
    model: Any, encoder: _Encoder, texts: Sequence[str], device: Any, batch_size: int = 256
) -> np.ndarray:

    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            out.append(_forward(model, encoder, texts[s : s + batch_size], device).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_reward(
    reward: Any, pairs: Any, *, use_margin: bool = False, on_error: str = "raise"
) -> dict[str, float]:
    """Accuracy (ties count ½) and Bradley–Terry loss of a reward function / spec / RM folder
    on preference pairs (a source :func:`textenv.preferences.read_preferences` accepts)."""

    pairs = as_pairs(pairs, on_error)
    fn = load_reward(reward) if isinstance(reward, str) else reward
    prompts = [p.prompt for p in pairs]
    meta = [dict(p.metadata) for p in pairs]
    s = score(fn, prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs], meta * 2)
    n = len(pairs)
    margin = margins(pairs, use_margin)
    return {**pair_metrics(s[:n], s[n:], margin), "n": n}


# --------------------------------------------------------------------------- training


def train_reward(
    pairs: Any,
    out_dir: str | Path,
    config: RewardModelConfig,
    *,
    val_pairs: Any = None,
    normalize_samples: Sequence[tuple[str, str]] | None = None,
    progress: bool = True,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Train a reward model of ``config.kind`` and save it to ``out_dir`` (see
    :func:`train_reward_model` and :func:`textenv.training.fused_head.train_fused_head`)."""
    train = train_reward_model if config.kind == "backbone" else train_fused_head
    return train(
        pairs,
        out_dir,
        config,
        val_pairs=val_pairs,
        normalize_samples=normalize_samples,
        progress=progress,
        on_error=on_error,
    )


def train_reward_model(
    pairs: Any,
    out_dir: str | Path,
    config: RewardModelConfig | None = None,
    *,
    val_pairs: Any = None,
    normalize_samples: Sequence[tuple[str, str]] | None = None,
    progress: bool = True,
    on_error: str = "raise",
    **settings: Any,
) -> dict[str, Any]:
    """Train a Bradley–Terry backbone reward model on ``pairs`` and save it to ``out_dir``.

    ``pairs``: a preference source (path, rows, dataset, or :class:`PreferencePair` list).
    ``config``: a :class:`RewardModelConfig` of kind ``backbone``; keyword ``settings`` (its
    field names: ``backbone``, ``epochs``, ``lr``, ...) override it. ``val_pairs``: explicit
    validation pairs; otherwise ``config.val_fraction`` of the prompts are held out (0: no
    validation, no early stopping). ``normalize_samples``: ``(prompt, completion)`` reference
    samples for the normalisation (default: the distinct training completions, which are
    samples of the policy being labelled). The folder is written atomically: a kill leaves the
    previous folder or the new one; ``out_dir`` must be new, empty or an earlier reward model.
    Returns the metrics (also written to ``out_dir/training_metrics.json``).

    Note: frozen models are cached per spec in :mod:`textenv.lm.models`; if this process already
    loaded ``out_dir`` with :func:`textenv.rewards.load_reward`, that cached copy is stale.
    """
    config = RewardModelConfig.from_kwargs("backbone", config, **settings)
    out = check_dir_target(out_dir, RM_MARKERS)  # fail before training, not at the save
    train, val = training_pairs(pairs, val_pairs, config, on_error)

    device = config.device
    torch.manual_seed(config.seed)
    model, tokenizer = load_backbone(config.backbone, device)
    positions = _max_positions(model)
    encoder = _Encoder(tokenizer, min(config.max_length, positions or config.max_length))
    texts = {
        split: ([p.prompt + p.chosen for p in ps], [p.prompt + p.rejected for p in ps])
        for split, ps in (("train", train), ("val", val))
    }

    def rewards(split: str, rows: np.ndarray) -> tuple[Any, Any]:
        chosen, rejected = texts[split]
        r = _forward(
            model, encoder, [chosen[i] for i in rows] + [rejected[i] for i in rows], device
        )
        return r[: len(rows)], r[len(rows) :]

    fit = fit_bradley_terry(
        model,
        rewards,
        margins(train, config.use_margin),
        margins(val, config.use_margin),
        config,
        progress=progress,
    )

    mean, std = 0.0, 1.0
    if config.normalize:
        if normalize_samples is None:
            samples = list(dict.fromkeys(texts["train"][0] + texts["train"][1]))
        else:
            samples = [p + c for p, c in normalize_samples]
        scores = _score_all(model, encoder, samples, device)
        mean, std = reward_normalisation(scores)
    model.config.reward_mean = mean
    model.config.reward_std = std
    metrics = summary(
        config,
        fit,
        n_train=len(train),
        n_val=len(val),
        reward_mean=mean,
        reward_std=std,
        parameters=sum(p.numel() for p in model.parameters()),
        out_dir=str(out),
    )

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "training_metrics.json", metrics, indent=1)

    atomic_write_dir(out, write, replaces=RM_MARKERS)
    return metrics
