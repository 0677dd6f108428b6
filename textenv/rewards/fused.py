"""A reward model that is a small head on the frozen reference LM's own trunk.

InstructGPT initialises its reward model from the SFT model; taken one step further, the reward
can *share* the frozen reference's trunk, so the env gets the reference log-probs and the reward
from **one** forward instead of two (``benchmarks/throughput.py``, variant (f)).

The head scores every completion token from the reference's features at that position (the last
hidden state and the input embedding, concatenated) with a one-hidden-layer MLP, and the reward
is the mean over the completion's tokens::

    r = (mean_t MLP([h_t ; e_t]) − mean) / std

Per-token scoring with mean pooling lets a small head read properties spread over the whole
completion (sentiment words anywhere in it); a linear probe on the last token's state was near
chance on Sentiment-v0. Only the head is trained (Bradley–Terry on frozen features, seconds on a
CPU); its accuracy against a fine-tuned backbone RM is in ``benchmarks/results/``.

A fused head is saved as a folder holding ``fused_reward.json`` (the reference spec, sizes,
normalisation) and ``head.safetensors``; :func:`textenv.rewards.load_reward` recognises it.
Pooled positions: the completion's tokens other than EOS (the env's completions may end with EOS,
preference texts do not); an empty completion is read at the prompt's last token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from textenv.lm.models import load_frozen_causal_lm, load_tokenizer
from textenv.lm.sampling import position_ids_from_mask

__all__ = [
    "FusedRewardHead",
    "is_fused_reward_folder",
    "logprobs_and_reward",
    "CONFIG_NAME",
]

CONFIG_NAME = "fused_reward.json"
HEAD_NAME = "head.safetensors"


def is_fused_reward_folder(spec: Any) -> bool:
    return isinstance(spec, (str, Path)) and (Path(str(spec)).expanduser() / CONFIG_NAME).is_file()


def token_features(hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-position features ``(B, T, 2d)``: last hidden state and input embedding."""
    return torch.cat([hidden_states[-1], hidden_states[0]], dim=-1).float()


def pooled_scores(
    token_scores: torch.Tensor, completion_mask: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean of per-token scores ``(B, T)`` over completion positions; rows with an empty
    completion take the score at their last attended position."""
    weights = completion_mask.to(token_scores.dtype)
    count = weights.sum(-1)
    mean = (token_scores * weights).sum(-1) / count.clamp_min(1.0)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, -1).max(-1).values
    fallback = token_scores[torch.arange(token_scores.shape[0]), last]
    return torch.where(count > 0, mean, fallback)


def make_mlp(in_features: int, width: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(in_features, width), torch.nn.GELU(), torch.nn.Linear(width, 1)
    )


class FusedRewardHead:
    """Reward = normalised mean per-token MLP score on the frozen reference's features."""

    def __init__(
        self,
        reference: str,
        mlp: torch.nn.Module | None = None,
        *,
        width: int = 256,
        mean: float = 0.0,
        std: float = 1.0,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> None:
        self.reference_spec = reference
        self.model = load_frozen_causal_lm(reference, device, dtype)
        self.tokenizer = load_tokenizer(reference)
        in_features = 2 * self.model.config.hidden_size
        self.mlp = (mlp or make_mlp(in_features, width)).to(device=device, dtype=torch.float32)
        self.mlp.eval().requires_grad_(False)
        self.width = width
        self.mean, self.std = float(mean), float(std)
        self.calls = 0

    # ------------------------------------------------------------------ scoring

    def score_features(
        self, features: torch.Tensor, completion_mask: torch.Tensor, mask: torch.Tensor
    ) -> np.ndarray:
        raw = pooled_scores(self.mlp(features).squeeze(-1), completion_mask, mask)
        return ((raw - self.mean) / self.std).double().cpu().numpy()

    @torch.no_grad()
    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token features ``(B, T, 2d)`` of left-padded rows."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            output_hidden_states=True,
            logits_to_keep=1,
        )
        return token_features(out.hidden_states)

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
        device = next(self.mlp.parameters()).device
        return ids.to(device), mask.to(device), completion_mask.to(device)

    @torch.no_grad()
    def __call__(
        self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]
    ) -> np.ndarray:
        """Standalone scoring of texts (one reference forward)."""
        self.calls += 1
        ids, mask, completion_mask = self.encode(prompts, completions)
        return self.score_features(self.features(ids, mask), completion_mask, mask)

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.mlp.state_dict().items()}
        save_file(state, str(folder / HEAD_NAME))
        config = {
            "kind": "fused_reward_head",
            "reference": self.reference_spec,
            "in_features": 2 * self.model.config.hidden_size,
            "width": self.width,
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
        head = cls(
            config["reference"],
            width=int(config["width"]),
            mean=config.get("reward_mean", 0.0),
            std=config.get("reward_std", 1.0),
            device=device,
            dtype=dtype,
        )
        expected = 2 * head.model.config.hidden_size
        if config.get("in_features") != expected:
            raise ValueError(
                f"fused reward head in {folder} reads {config.get('in_features')} features but "
                f"reference {config['reference']!r} gives {expected}"
            )
        head.mlp.load_state_dict(load_file(str(folder / HEAD_NAME)))
        return head


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
    return logprobs, head.score_features(token_features(out.hidden_states), completion, mask)
