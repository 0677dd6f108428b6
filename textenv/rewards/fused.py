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

from textenv.lm.models import load_frozen_causal_lm, load_tokenizer, same_tokenizer
from textenv.lm.padding import forward_left_padded, left_pad
from textenv.lm.sampling import completion_logprobs
from textenv.rewards.capabilities import TokenRows

__all__ = [
    "FusedRewardHead",
    "is_fused_reward_folder",
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
    """Reward = normalised mean per-token MLP score on the frozen reference's features.

    It has both capabilities of :mod:`textenv.rewards.capabilities`: it shares the reference's
    forward (:meth:`shares_reference`, :meth:`reference_logprobs_and_scores`) and reads the
    reference tokenizer's ids (:meth:`reads_token_ids`, :meth:`score_token_ids`).
    """

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
        out = forward_left_padded(
            self.model, ids, mask, output_hidden_states=True, logits_to_keep=1
        )
        return token_features(out.hidden_states)

    def encode(
        self, prompts: Sequence[str], completions: Sequence[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ``prompt_ids + completion_ids`` (each part tokenised on its own, as the
        env lays them out), left-truncated to the model's positions, with the completion mask."""
        eos = self.tokenizer.eos_token_id
        prompt_rows = [
            self.tokenizer(p, add_special_tokens=False)["input_ids"] or [eos] for p in prompts
        ]
        completion_rows = [
            self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions
        ]
        return self.encode_ids(prompt_rows, completion_rows, max_length)

    def encode_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        max_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`encode` from token ids: ``(ids, mask, completion_mask)``, left-padded."""
        limit = max_length or getattr(self.model.config, "n_positions", 1024)
        eos = self.tokenizer.eos_token_id
        rows, n_completion = [], []
        for prompt, completion in zip(prompt_ids, completion_ids):
            ids = (list(prompt) + list(completion))[-limit:]
            rows.append(ids)
            n_completion.append(min(len(completion), len(ids)))
        device = next(self.mlp.parameters()).device
        ids, mask = left_pad(rows, self.tokenizer.pad_token_id, device=device)
        # The last n_completion real positions of each row (the rows end at the right edge).
        from_end = torch.arange(ids.shape[1] - 1, -1, -1, device=device)
        counts = torch.tensor(n_completion, device=device)
        completion_mask = ((from_end[None, :] < counts[:, None]) & (ids != eos)).long()
        return ids, mask, completion_mask

    # ------------------------------------------------------------------ capabilities

    def reads_token_ids(self, tokenizer: Any) -> bool:
        return same_tokenizer(self.tokenizer, tokenizer)

    @torch.no_grad()
    def score_token_ids(
        self, prompt_ids: TokenRows, completion_ids: TokenRows, metadata: list[dict[str, Any]]
    ) -> np.ndarray:
        """Scores of token-id rows (the reference tokenizer's ids), one forward."""
        self.calls += 1
        ids, mask, completion_mask = self.encode_ids(prompt_ids, completion_ids)
        return self.score_features(self.features(ids, mask), completion_mask, mask)

    def shares_reference(self, spec: str, device: torch.device, dtype: torch.dtype) -> bool:
        """The head reads the reference ``spec`` on ``device`` in ``dtype`` (its trunk's)."""
        param = next(self.model.parameters())
        return (
            str(spec) == str(self.reference_spec)
            and torch.device(device) == param.device
            and dtype == param.dtype
        )

    @torch.no_grad()
    def reference_logprobs_and_scores(
        self,
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
        out = forward_left_padded(
            self.model, ids, mask, output_hidden_states=True, logits_to_keep=n + 1
        )
        logprobs = completion_logprobs(out.logits, completion_ids, temperature)
        completion = torch.zeros_like(mask)
        eos = self.tokenizer.eos_token_id
        completion[:, -n:] = completion_mask.long() * (completion_ids != eos)
        self.calls += 1
        return logprobs, self.score_features(token_features(out.hidden_states), completion, mask)

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
