"""Training of the fused reward head (see :mod:`textenv.rewards.fused`): Bradley–Terry on the frozen
reference's features."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from textenv.preferences import read_preferences
from textenv.rewards.fused import FusedRewardHead, make_mlp, pooled_scores
from textenv.training.reward_model import split_by_prompt

__all__ = ["train_fused_head"]


def _featurise(
    head: FusedRewardHead, prompts: list[str], completions: list[str], batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Frozen per-token features, computed once, in chunks of ``(features, completion, mask)``."""
    chunks = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, completion = head.encode(
            prompts[start : start + batch_size], completions[start : start + batch_size]
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
    *,
    reference: str = "builtin:prose",
    val_fraction: float = 0.1,
    width: int = 256,
    epochs: int = 20,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 64,
    patience: int = 4,
    normalize: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the head with the Bradley–Terry loss on frozen features; save it to ``out_dir``.

    Features of every chosen/rejected text are computed once (the trunk is frozen); the MLP is
    trained with AdamW on ``−log σ(r_c − r_r − margin)``, with early stopping on the held-out
    loss (best epoch kept). ``normalize`` stores the mean / std of the raw reward over the
    training completions (samples of the policy being labelled), so rewards start at mean 0,
    std 1. Returns metrics, also written to ``out_dir/training_metrics.json``.
    """

    started = time.perf_counter()
    all_pairs = pairs if isinstance(pairs, list) else list(read_preferences(pairs))
    train, val = split_by_prompt(all_pairs, val_fraction, seed)
    if not train:
        raise ValueError("no training pairs")
    torch.manual_seed(seed)
    head = FusedRewardHead(reference, width=width)
    mlp = make_mlp(2 * head.model.config.hidden_size, width)

    def data(ps: list) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor]:
        prompts = [p.prompt for p in ps]
        chosen = _stack(_featurise(head, prompts, [p.chosen for p in ps], 256))
        rejected = _stack(_featurise(head, prompts, [p.rejected for p in ps], 256))
        margin = torch.tensor([float(getattr(p, "margin", 0.0) or 0.0) for p in ps])
        return chosen, rejected, margin

    def reward(batch: tuple[torch.Tensor, ...], rows: torch.Tensor | slice) -> torch.Tensor:
        feats, completion, mask = (x[rows] for x in batch)
        return pooled_scores(mlp(feats).squeeze(-1), completion, mask)

    def evaluate(split: tuple) -> tuple[float, float]:
        chosen, rejected, margin = split
        with torch.no_grad():
            diff = reward(chosen, slice(None)) - reward(rejected, slice(None))
            loss = torch.nn.functional.softplus(-(diff - margin)).mean().item()
        return loss, (diff > 0).float().mean().item()

    train_data = data(train)
    val_data = data(val) if val else None
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history, best, best_state, waited = [], float("inf"), copy.deepcopy(mlp.state_dict()), 0
    n = len(train)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            diff = reward(train_data[0], rows) - reward(train_data[1], rows)
            loss = torch.nn.functional.softplus(-(diff - train_data[2][rows])).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        record = {"epoch": epoch + 1}
        record["train_loss"], record["train_accuracy"] = evaluate(train_data)
        if val_data is not None:
            record["val_loss"], record["val_accuracy"] = evaluate(val_data)
        history.append(record)
        score = record.get("val_loss", record["train_loss"])
        if score < best:
            best, best_state, waited = score, copy.deepcopy(mlp.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    mlp.load_state_dict(best_state)
    head.mlp = mlp.eval().requires_grad_(False)
    if normalize:
        with torch.no_grad():
            raw = torch.cat(
                [reward(train_data[0], slice(None)), reward(train_data[1], slice(None))]
            )
        head.mean, head.std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
    best_record = min(history, key=lambda r: r.get("val_loss", r["train_loss"]))
    metrics = {
        "kind": "fused_reward_head",
        "reference": reference,
        "train_pairs": len(train),
        "val_pairs": len(val),
        **{k: v for k, v in best_record.items()},
        "epochs_run": len(history),
        "history": history,
        "time_s": time.perf_counter() - started,
    }
    head.save(out_dir, {"training": {k: v for k, v in metrics.items() if k != "history"}})
    (Path(out_dir) / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
