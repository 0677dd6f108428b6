"""The one Bradley–Terry training loop behind both reward-model kinds, and their config.

A reward model of either kind (:mod:`textenv.training.reward_model`: a fine-tuned backbone with a
score head; :mod:`textenv.training.fused_head`: a small head on the frozen reference's trunk) is
trained by :func:`fit_bradley_terry` on a callable that scores rows of chosen / rejected texts:

* loss per batch ``−log σ(r_c − r_r − margin)`` (``margin`` from the data when ``use_margin``,
  else 0) ``+ center_coef · mean((r_c + r_r)²)`` (keeps rewards near 0, TRL's
  ``center_rewards_coefficient``);
* per epoch ``train_loss`` / ``train_accuracy`` (the mean over the epoch's batches; the loss
  without the centering term; ties count ½) and ``val_loss`` / ``val_accuracy`` on the held-out
  pairs; ``history[0]`` is the validation before any step (epoch 0);
* early stopping when ``val_loss`` has not improved for ``patience`` epochs; the best epoch's
  weights are kept. Without validation pairs every epoch runs and the last is kept.

Both kinds report the same metric names (:func:`summary`): ``kind``, ``backbone``, ``n_train``,
``n_val``, ``epochs_run``, ``best_epoch``, ``stopped_early``, ``train_time_s``, ``train_loss``,
``train_accuracy``, ``val_loss``, ``val_accuracy`` (the best epoch's), ``reward_mean``,
``reward_std``, ``parameters`` (trained), ``config`` and ``history``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch

from textenv.preferences import PreferencePair, read_preferences
from textenv.progress import progress as show_progress
from textenv.rewards.fused import CONFIG_NAME as FUSED_CONFIG
from textenv.validation import is_finite, is_int

__all__ = [
    "as_pairs",
    "RM_MARKERS",
    "RewardModelConfig",
    "RM_KINDS",
    "DEFAULT_BACKBONE",
    "fit_bradley_terry",
    "FitResult",
    "pair_metrics",
    "reward_normalisation",
    "split_by_prompt",
    "summary",
    "training_pairs",
]

DEFAULT_BACKBONE = "builtin:prose"
RM_KINDS: tuple[str, ...] = ("backbone", "fused")

# Defaults that differ by kind: a whole LM is fine-tuned slowly; a small head on frozen
# features takes a larger step, more epochs, and needs no gradient clip.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "backbone": dict(
        epochs=10, batch_size=32, lr=3e-4, weight_decay=0.0, patience=2, grad_clip=1.0
    ),
    "fused": dict(epochs=20, batch_size=64, lr=3e-3, weight_decay=1e-2, patience=4, grad_clip=0.0),
}


@dataclass
class RewardModelConfig:
    """How a reward model is trained (``textenv rm train``'s flags are built from these fields).

    Attributes:
        kind: ``backbone`` (fine-tune a copy of the LM with a one-output score head) or
            ``fused`` (a small MLP head on the frozen LM's trunk, see textenv.rewards.fused).
        backbone: model spec the RM starts from (backbone) or whose frozen trunk it reads (fused).
        epochs: maximum passes over the training pairs (default 10 backbone, 20 fused).
        batch_size: pairs per gradient step (default 32 backbone, 64 fused).
        lr: AdamW learning rate (default 3e-4 backbone, 3e-3 fused).
        weight_decay: AdamW weight decay (default 0 backbone, 0.01 fused).
        patience: epochs without a better validation loss before stopping (default 2 / 4).
        grad_clip: gradient-norm clip, 0 for none (default 1 backbone, 0 fused).
        center_coef: weight of mean((r_c + r_r)^2) in the loss, e.g. 0.01 (TRL).
        use_margin: subtract the data's per-pair margin in the loss.
        normalize: store the mean / std of the trained RM's scores on reference samples, so the
            loaded reward has mean 0 and std 1 there.
        val_fraction: share of the pairs held out by prompt for validation (0: none).
        max_length: tokens per text (prompt + completion), left-truncated.
        width: hidden width of the fused head's MLP.
        seed: seeds the split, the initialisation and the batch order.
        device: torch device of the training.
    """

    kind: Literal["backbone", "fused"] = "backbone"
    backbone: str = DEFAULT_BACKBONE
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    patience: int | None = None
    grad_clip: float | None = None
    center_coef: float = 0.0
    use_margin: bool = True
    normalize: bool = True
    val_fraction: float = 0.1
    max_length: int = 256
    width: int = 256
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in RM_KINDS:
            raise ValueError(f"kind must be one of {RM_KINDS}, got {self.kind!r}")
        for name, value in KIND_DEFAULTS[self.kind].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("backbone", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "patience", "max_length", "width"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("lr", "weight_decay", "grad_clip", "center_coef"):
            value = getattr(self, name)
            if not is_finite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not is_finite(self.val_fraction) or not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        for name in ("use_margin", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_kwargs(cls, kind: str, config: RewardModelConfig | None, **kwargs: Any) -> Any:
        """``config`` (of ``kind``) with keyword fields on top; unknown keywords raise."""
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"unknown reward-model settings: {sorted(unknown)}")
        if config is None:
            return cls(kind=kind, **kwargs)  # type: ignore[arg-type]
        if config.kind != kind:
            raise ValueError(f"config.kind is {config.kind!r}; this trains a {kind!r} reward model")
        return cls(**{**asdict(config), **kwargs})


# --------------------------------------------------------------------------- data

# Files that mark a folder as an earlier reward model (either kind): only such a folder (or an
# empty one) is replaced by a new training run.
RM_MARKERS: tuple[str, ...] = ("training_metrics.json", FUSED_CONFIG)


def as_pairs(source: Any, on_error: str = "raise") -> list[PreferencePair]:
    """A list of :class:`PreferencePair` from any source ``read_preferences`` accepts."""
    if isinstance(source, list) and all(isinstance(p, PreferencePair) for p in source):
        return source
    return list(read_preferences(source, on_error=on_error))


def split_by_prompt(
    pairs: Sequence[Any], val_fraction: float, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """Train / validation pairs, whole prompts on one side (about ``val_fraction`` of pairs),
    so the pairs of one ranking never straddle the split (InstructGPT). With a single prompt,
    pairs are split individually."""
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


def training_pairs(
    pairs: Any, val_pairs: Any, config: RewardModelConfig, on_error: str = "raise"
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Train / validation pairs of a run: ``val_pairs`` when given, else ``config.val_fraction``
    of ``pairs`` held out by prompt (:func:`split_by_prompt`); raises when no training pair is
    left."""
    all_pairs = as_pairs(pairs, on_error)
    if val_pairs is not None:
        train, val = all_pairs, as_pairs(val_pairs, on_error)
    else:
        train, val = split_by_prompt(all_pairs, config.val_fraction, config.seed)
    if not train:
        raise ValueError("no training pairs")
    return train, val


def reward_normalisation(scores: np.ndarray) -> tuple[float, float]:
    """``(mean, std)`` a trained RM stores so its reward has mean 0 and std 1 on ``scores`` (its
    raw scores of reference samples); std 1 where it is undefined (one sample) or ~0."""
    std = float(scores.std())
    return float(scores.mean()), std if scores.size > 1 and std > 1e-8 else 1.0


def margins(pairs: Sequence[Any], use_margin: bool) -> np.ndarray:
    """Per-pair margins (0 where absent, or everywhere without ``use_margin``)."""
    return np.array(
        [float(getattr(p, "margin", 0.0) or 0.0) if use_margin else 0.0 for p in pairs],
        dtype=np.float32,
    )


def pair_metrics(rc: np.ndarray, rr: np.ndarray, margin: np.ndarray) -> dict[str, float]:
    """Bradley–Terry ``loss`` and ``accuracy`` (ties count ½) of scored pairs."""
    d = rc - rr - margin
    loss = float(np.mean(np.logaddexp(0.0, -d))) if d.size else float("nan")
    acc = float(np.mean((rc > rr) + 0.5 * (rc == rr))) if d.size else float("nan")
    return {"loss": loss, "accuracy": acc}


# --------------------------------------------------------------------------- the loop

# (split, row indices) -> rewards of those rows' chosen and rejected texts, as float tensors.
PairRewards = Callable[[str, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_time_s: float

    @property
    def best(self) -> dict[str, Any]:
        return next((h for h in self.history if h["epoch"] == self.best_epoch), self.history[-1])


def _evaluate(
    rewards: PairRewards, split: str, margin: np.ndarray, batch_size: int
) -> dict[str, float]:
    rc, rr = [], []
    with torch.no_grad():
        for start in range(0, len(margin), batch_size):
            c, r = rewards(split, np.arange(start, min(start + batch_size, len(margin))))
            rc.append(c.float().cpu().numpy())
            rr.append(r.float().cpu().numpy())
    return pair_metrics(np.concatenate(rc), np.concatenate(rr), margin)


def fit_bradley_terry(
    module: torch.nn.Module,
    rewards: PairRewards,
    train_margins: np.ndarray,
    val_margins: np.ndarray,
    config: RewardModelConfig,
    *,
    progress: bool = False,
    eval_batch_size: int = 256,
) -> FitResult:
    """Train ``module``'s trainable parameters so that ``rewards`` ranks chosen over rejected.

    ``rewards("train" | "val", rows)`` scores rows of that split (``len(train_margins)`` and
    ``len(val_margins)`` rows). The module is left holding the best epoch's weights.
    """
    n_train, has_val = len(train_margins), len(val_margins) > 0
    if n_train < 1:
        raise ValueError("no training pairs")
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng([config.seed, 17])
    history: list[dict[str, Any]] = []
    if has_val:
        val0 = _evaluate(rewards, "val", val_margins, eval_batch_size)
        history.append({"epoch": 0, **{f"val_{k}": v for k, v in val0.items()}})
    best_loss, best_epoch, best_state, bad = math.inf, 0, None, 0
    stopped_early = False
    n_batches = math.ceil(n_train / config.batch_size)
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(n_train)
        sum_loss = sum_acc = 0.0
        bar = None
        if progress:
            desc = f"epoch {epoch}/{config.epochs}"
            # leave=False: one line per epoch follows; in a file or pipe only that line shows
            bar = show_progress(n_batches, desc=desc, unit="batch", leave=False)
        for b in range(n_batches):
            rows = order[b * config.batch_size : (b + 1) * config.batch_size]
            rc, rr = rewards("train", rows)
            margin = torch.as_tensor(train_margins[rows], device=rc.device)
            bt = -torch.nn.functional.logsigmoid(rc - rr - margin).mean()
            loss = bt + config.center_coef * ((rc + rr) ** 2).mean() if config.center_coef else bt
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            acc = ((rc > rr).float() + 0.5 * (rc == rr).float()).mean().item()
            sum_loss += bt.item() * len(rows)
            sum_acc += acc * len(rows)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{bt.item():.3f}", acc=f"{acc:.2f}")
        if bar is not None:
            bar.close()
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": sum_loss / n_train,
            "train_accuracy": sum_acc / n_train,
            "time_s": time.perf_counter() - start,
        }
        if has_val:
            val = _evaluate(rewards, "val", val_margins, eval_batch_size)
            row.update({f"val_{k}": v for k, v in val.items()})
        history.append(row)
        if progress:
            shown = "  ".join(
                f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "time_s")
            )
            print(f"epoch {epoch}: {shown}  ({row['time_s']:.1f} s)", flush=True)
        if not has_val:
            best_epoch = epoch
            continue
        if row["val_loss"] < best_loss - 1e-4:
            best_loss, best_epoch, bad = row["val_loss"], epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            bad += 1
            if bad >= config.patience:
                stopped_early = True
                break
    train_time = time.perf_counter() - start
    if best_state is not None:
        module.load_state_dict(best_state)
    return FitResult(history, best_epoch, history[-1]["epoch"], stopped_early, train_time)


def summary(
    config: RewardModelConfig,
    fit: FitResult,
    *,
    n_train: int,
    n_val: int,
    reward_mean: float,
    reward_std: float,
    parameters: int,
    out_dir: str,
) -> dict[str, Any]:
    """The metrics both kinds report (also saved as ``training_metrics.json``)."""
    best = fit.best
    return {
        "kind": config.kind,
        "backbone": config.backbone,
        "out_dir": out_dir,
        "n_train": n_train,
        "n_val": n_val,
        "epochs_run": fit.epochs_run,
        "best_epoch": fit.best_epoch,
        "stopped_early": fit.stopped_early,
        "train_time_s": fit.train_time_s,
        "train_loss": best.get("train_loss"),
        "train_accuracy": best.get("train_accuracy"),
        "val_loss": best.get("val_loss"),
        "val_accuracy": best.get("val_accuracy"),
        "reward_mean": reward_mean,
        "reward_std": reward_std,
        "parameters": parameters,
        "config": asdict(config),
        "history": fit.history,
    }
