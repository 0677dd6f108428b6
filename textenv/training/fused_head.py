"""Training of the fused reward head (see :mod:`textenv.rewards.fused`): Bradley–Terry on the frozen
reference's features, with the loop and metrics every reward model shares
(:mod:`textenv.training.bradley_terry`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textenv.files import atomic_write_dir, atomic_write_json, check_dir_target
from textenv.preferences import PreferencePair
from textenv.rewards.fused import FusedRewardHead, make_mlp, pooled_scores
from textenv.training.bradley_terry import (
    RM_MARKERS,
    RewardModelConfig,
    fit_bradley_terry,
    margins,
    reward_normalisation,
    summary,
    training_pairs,
)

__all__ = ["train_fused_head"]


def _featurise(
    head: FusedRewardHead,
    prompts: list[str],
    completions: list[str],
    batch_size: int,
    max_length: int,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Frozen per-token features, computed once, in chunks of ``(features, completion, mask)``."""
    chunks = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, completion = head.encode(
            prompts[start : start + batch_size], completions[start : start + batch_size], max_length
        )
        chunks.append((head.features(ids, mask), completion, mask))
    return chunks


def _stack(chunks: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Left-pad chunks to one width and concatenate."""
    width = max(c[0].shape[1] for c in chunks)

    def pad(x: torch.Tensor) -> torch.Tensor:
        extra = width - x.shape[1]
        return torch.nn.functional.pad(x, (0, 0, extra, 0) if x.dim() == 3 else (extra, 0))

    return tuple(torch.cat([pad(c[i]) for c in chunks]) for i in range(3))


def train_fused_head(
    pairs: Any,
    out_dir: str | Path,
    config: RewardModelConfig | None = None,
    *,
    val_pairs: Any = None,
    normalize_samples: Sequence[tuple[str, str]] | None = None,
    progress: bool = False,
    on_error: str = "raise",
    reference: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train the head with the Bradley–Terry loss on frozen features; save it to ``out_dir``.

    ``config``: a :class:`RewardModelConfig` of kind ``fused`` (its ``backbone`` is the frozen
    reference; ``reference=`` is accepted as another name for it); keyword ``settings`` (its
    field names) override it. Features of every chosen / rejected text are computed once (the
    trunk is frozen); the MLP is trained by the shared loop (early stopping on the held-out
    loss, best epoch kept). ``normalize`` stores the mean / std of the raw reward over
    ``normalize_samples`` (default: the distinct training completions, samples of the policy
    being labelled), so rewards start at mean 0, std 1. The folder is written atomically.
    Returns the metrics every reward model reports, also written to
    ``out_dir/training_metrics.json``.
    """
    if reference is not None:
        settings["backbone"] = reference
    config = RewardModelConfig.from_kwargs("fused", config, **settings)
    out = check_dir_target(out_dir, RM_MARKERS)  # fail before training, not at the save
    train, val = training_pairs(pairs, val_pairs, config, on_error)
    torch.manual_seed(config.seed)
    head = FusedRewardHead(config.backbone, width=config.width, device=config.device)
    mlp = make_mlp(2 * head.model.config.hidden_size, config.width).to(config.device)

    def data(ps: list[PreferencePair]) -> tuple[tuple[torch.Tensor, ...], ...]:
        prompts = [p.prompt for p in ps]
        return tuple(
            _stack(
                _featurise(head, prompts, [getattr(p, side) for p in ps], 256, config.max_length)
            )
            for side in ("chosen", "rejected")
        )

    features = {"train": data(train), "val": data(val) if val else ()}

    def rewards(split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(rows, dtype=torch.long)
        out = []
        for feats, completion, mask in features[split]:
            feats, completion, mask = feats[index], completion[index], mask[index]
            out.append(pooled_scores(mlp(feats).squeeze(-1), completion, mask))
        return out[0], out[1]

    fit = fit_bradley_terry(
        mlp,
        rewards,
        margins(train, config.use_margin),
        margins(val, config.use_margin),
        config,
        progress=progress,
    )
    head.mlp = mlp.eval().requires_grad_(False)
    if config.normalize:
        if normalize_samples is None:
            samples = list(
                dict.fromkeys((p.prompt, c) for p in train for c in (p.chosen, p.rejected))
            )
        else:
            samples = list(normalize_samples)
        raw = np.concatenate(
            [
                head(
                    [p for p, _ in samples[i : i + 256]],
                    [c for _, c in samples[i : i + 256]],
                    [{}] * len(samples[i : i + 256]),
                )
                for i in range(0, len(samples), 256)
            ]
        )
        head.mean, head.std = reward_normalisation(raw)
    metrics = summary(
        config,
        fit,
        n_train=len(train),
        n_val=len(val),
        reward_mean=head.mean,
        reward_std=head.std,
        parameters=sum(p.numel() for p in mlp.parameters()),
        out_dir=str(out),
    )

    def write(tmp: Path) -> None:
        head.save(tmp, {"training": {k: v for k, v in metrics.items() if k != "history"}})
        atomic_write_json(tmp / "training_metrics.json", metrics)

    atomic_write_dir(out, write, replaces=RM_MARKERS)
    return metrics
