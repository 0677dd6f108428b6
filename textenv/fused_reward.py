"""A reward model that is a scalar head on the frozen reference LM's own trunk.

InstructGPT initialises its reward model from the SFT model; taken one step further, the reward
can *share* the frozen reference's trunk: ``r = w·h̄ + b`` with ``h̄`` the mean of the reference's
last hidden states over the completion's tokens (in the context of the prompt). Mean pooling,
rather than the last token's state, is what lets a linear head on a small frozen trunk read
properties spread over the whole completion (sentiment words anywhere in it). The env then gets the reference
log-probs and the reward from **one** forward instead of two (see ``benchmarks/throughput.py
--fused``). Only the head is trained (a Bradley–Terry linear probe on frozen features), so
training takes seconds; the accuracy cost against a separately fine-tuned backbone is measured in
``benchmarks/reward_model.py``.

A fused head is saved as a folder holding ``fused_reward.json`` (the reference spec, hidden size,
normalisation) and ``head.safetensors``; :func:`textenv.rewards.load_reward` recognises it.
Pooled positions: the completion's tokens other than EOS (the env's completions may end with
EOS, preference texts do not: both pool the same tokens); an empty completion is read at the
prompt's last token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from textenv.models import load_frozen_causal_lm, load_tokenizer
from textenv.sampling import position_ids_from_mask

__all__ = [
    "FusedRewardHead",
    "is_fused_reward_folder",
    "train_fused_head",
    "logprobs_and_reward",
    "CONFIG_NAME",
]

CONFIG_NAME = "fused_reward.json"
HEAD_NAME = "head.safetensors"


def is_fused_reward_folder(spec: Any) -> bool:
    return isinstance(spec, (str, Path)) and (Path(str(spec)).expanduser() / CONFIG_NAME).is_file()


def pool(hidden: torch.Tensor, completion_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, d) over completion positions; the last attended position for
    rows with an empty completion."""
    weights = completion_mask.to(hidden.dtype)
    count = weights.sum(-1, keepdim=True)
    mean = (hidden * weights[..., None]).sum(1) / count.clamp_min(1.0)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, -1).max(-1).values
    fallback = hidden[torch.arange(hidden.shape[0]), last]
    return torch.where(count > 0, mean, fallback)


class FusedRewardHead:
    """``r = (w·h + b − mean) / std`` on the frozen reference's last hidden state."""

    def __init__(
        self,
        reference: str,
        weight: torch.Tensor,
        bias: float = 0.0,
        *,
        mean: float = 0.0,
        std: float = 1.0,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> None:
        self.reference_spec = reference
        self.model = load_frozen_causal_lm(reference, device, dtype)
        self.tokenizer = load_tokenizer(reference)
        self.weight = weight.to(device=device, dtype=torch.float32)
        self.bias = float(bias)
        self.mean, self.std = float(mean), float(std)
        self.calls = 0

    # ------------------------------------------------------------------ scoring

    def score_hidden(self, hidden: torch.Tensor) -> np.ndarray:
        """Rewards from last hidden states ``(B, d)``."""
        raw = hidden.float() @ self.weight + self.bias
        return ((raw - self.mean) / self.std).double().cpu().numpy()

    @torch.no_grad()
    def features(
        self, ids: torch.Tensor, mask: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor:
        """Pooled last hidden states ``(B, d)`` of left-padded rows."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            output_hidden_states=True,
            logits_to_keep=1,
        )
        return pool(out.hidden_states[-1], completion_mask, mask)

    def encode(
        self, prompts: Sequence[str], completions: Sequence[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ``prompt_ids + completion_ids`` (each part tokenised on its own, as the
        env lays them out), left-truncated to the model's positions, with the completion mask."""
        limit = max_length or getattr(self.model.config, "n_positions", 1024)
        eos = self.tokenizer.eos_token_id
        rows = []
        for p, c in zip(prompts, completions):
            prompt = self.tokenizer(p, add_special_tokens=False)["input_ids"] or [eos]
            completion = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            ids = (prompt + completion)[-limit:]
            rows.append((ids, min(len(completion), len(ids))))
        width = max(len(r) for r, _ in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, n_completion) in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
            if n_completion:
                completion_mask[i, width - n_completion :] = 1
        completion_mask &= (ids != eos).long()
        device = self.weight.device
        return ids.to(device), mask.to(device), completion_mask.to(device)

    def __call__(
        self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]
    ) -> np.ndarray:
        """Standalone scoring of texts (one reference forward)."""
        self.calls += 1
        return self.score_hidden(self.features(*self.encode(prompts, completions)))

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {"weight": self.weight.detach().cpu().contiguous(), "bias": torch.tensor([self.bias])},
            str(folder / HEAD_NAME),
        )
        config = {
            "kind": "fused_reward_head",
            "reference": self.reference_spec,
            "hidden_size": int(self.weight.shape[0]),
            "reward_mean": self.mean,
            "reward_std": self.std,
            **(extra or {}),
        }
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, device: str = "cpu", dtype: str | None = None
    ) -> FusedRewardHead:
        folder = Path(folder).expanduser()
        config = json.loads((folder / CONFIG_NAME).read_text())
        tensors = load_file(str(folder / HEAD_NAME))
        head = cls(
            config["reference"],
            tensors["weight"],
            float(tensors["bias"][0]),
            mean=config.get("reward_mean", 0.0),
            std=config.get("reward_std", 1.0),
            device=device,
            dtype=dtype,
        )
        if head.weight.shape[0] != head.model.config.hidden_size:
            raise ValueError(
                f"fused reward head in {folder} has {head.weight.shape[0]} inputs but reference "
                f"{config['reference']!r} has hidden size {head.model.config.hidden_size}"
            )
        return head


def train_fused_head(
    pairs: Any,
    out_dir: str | Path,
    *,
    reference: str = "builtin:prose",
    val_fraction: float = 0.1,
    steps: int = 500,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    batch_size: int = 256,
    normalize: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a Bradley–Terry linear head on the frozen reference's features; save it.

    Features of every chosen/rejected text are computed once (frozen trunk), then the head is
    fitted by full-batch Adam on ``−log σ(r_c − r_r − margin)``. Returns metrics (train/val
    accuracy and loss, time), also written to ``out_dir/training_metrics.json``.
    """
    from textenv.preferences import read_preferences
    from textenv.reward_training import split_by_prompt

    started = time.perf_counter()
    all_pairs = list(read_preferences(pairs)) if not isinstance(pairs, list) else pairs
    train, val = split_by_prompt(all_pairs, val_fraction, seed)
    head = FusedRewardHead(reference, torch.zeros(1))
    hidden = head.model.config.hidden_size

    def featurise(ps: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats_c, feats_r = [], []
        for start in range(0, len(ps), batch_size):
            chunk = ps[start : start + batch_size]
            prompts = [p.prompt for p in chunk]
            feats_c.append(head.features(*head.encode(prompts, [p.chosen for p in chunk])))
            feats_r.append(head.features(*head.encode(prompts, [p.rejected for p in chunk])))
        margin = torch.tensor([float(getattr(p, "margin", 0.0) or 0.0) for p in ps])
        empty = torch.zeros(0, hidden)
        return (
            torch.cat(feats_c) if feats_c else empty,
            torch.cat(feats_r) if feats_r else empty,
            margin,
        )

    fc, fr, margin = featurise(train)
    vc, vr, vmargin = featurise(val)
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(hidden, generator=generator) * 1e-3).requires_grad_(True)
    bias = torch.zeros(1, requires_grad=True)  # cancels in r_c − r_r; kept for centring
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)

    def loss_acc(c: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            diff = (c - r) @ weight
            loss = torch.nn.functional.softplus(-(diff - m)).mean().item() if len(diff) else 0.0
            acc = (diff > 0).float().mean().item() if len(diff) else float("nan")
        return loss, acc

    for _ in range(steps):
        diff = (fc - fr) @ weight
        loss = torch.nn.functional.softplus(-(diff - margin)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    head.weight = weight.detach().clone()
    head.bias = 0.0
    if normalize:  # mean 0 / std 1 on the (reference-sampled) completions seen in training
        raw = torch.cat([fc, fr]) @ head.weight
        head.mean, head.std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
    train_loss, train_acc = loss_acc(fc, fr, margin)
    val_loss, val_acc = loss_acc(vc, vr, vmargin)
    metrics = {
        "kind": "fused_reward_head",
        "reference": reference,
        "train_pairs": len(train),
        "val_pairs": len(val),
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "time_s": time.perf_counter() - started,
    }
    head.save(out_dir, {"training": metrics})
    (Path(out_dir) / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


@torch.no_grad()
def logprobs_and_reward(
    head: FusedRewardHead,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, np.ndarray]:
    """Reference log-probs of the completion tokens and the fused reward, from one forward."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask.long(), completion_mask.long()], dim=1)
    n = completion_ids.shape[1]
    out = head.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        output_hidden_states=True,
        logits_to_keep=n + 1,
    )
    logits = out.logits[:, :-1].float() / temperature
    logprobs = torch.log_softmax(logits, -1).gather(-1, completion_ids[..., None]).squeeze(-1)
    completion = torch.zeros_like(mask)
    completion[:, -n:] = completion_mask.long() * (completion_ids != head.tokenizer.eos_token_id)
    head.calls += 1
    return logprobs, head.score_hidden(pool(out.hidden_states[-1], completion, mask))
