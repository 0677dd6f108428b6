"""The batched episode state shared by the single env (B = 1) and the native vector env.

Keeping one implementation of the MDP is what makes ``gym.make`` envs, ``gym.make_vec`` in
``"sync"`` mode and the native :class:`~textenv.env.vector.TextGenVectorEnv` agree: they only differ
in how rows are reset and how results are packed.

Per step the core does bookkeeping only (writes a token into preallocated arrays). The model
work happens when rows finish: one teacher-forced reference forward and one reward-model call
for *all* rows that finish on that step. Dense (``kl_reward="per_token"``) rewards and action
masks need the reference's next-token distribution every step; then a KV-cached
:class:`~textenv.lm.sampling.IncrementalLM` runs over the batch instead, one token per row per step.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from textenv.env.config import EnvConfig, check_real
from textenv.env.kl import K3_MAX_LOG_RATIO, kl_estimate, make_kl_controller, report_missing_logprob
from textenv.env.prompts import Prompt, PromptEncoder, check_prompt_text, load_prompts
from textenv.lm.models import load_frozen_causal_lm, load_tokenizer
from textenv.lm.padding import decode_rows, left_pad_arrays
from textenv.lm.sampling import (
    IncrementalLM,
    SamplingConfig,
    next_token_logprobs,
    sequence_logprobs,
)
from textenv.rewards import check_scores, check_user_reward, load_reward, score
from textenv.rewards.capabilities import reads_token_ids, shares_reference_forward

__all__ = ["EpisodeBatch", "EpisodeBatchAccess", "Finished"]

# Frames in these folders are the envs' own and Gymnasium's wrappers: a warning about a call into
# the env points past them, at the line that called it.
_INTERNAL_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (os.path.dirname(__file__), gymnasium.__file__)
)


@dataclass
class Finished:
    """Results for the rows that finished on one step (arrays over those rows)."""

    rows: np.ndarray
    rm_score: np.ndarray
    gold_score: np.ndarray | None
    kl: np.ndarray
    kl_coef: float
    ref_logprobs: np.ndarray  # (n, max_new_tokens), NaN padded
    logprobs: np.ndarray  # (n, max_new_tokens) the log π used (ρ where the agent gave none)
    text: list[str]
    prompt: list[str]
    num_tokens: np.ndarray
    penalty: np.ndarray


class EpisodeBatch:
    """B episodes of the token-level RLHF MDP, advanced together."""

    def __init__(self, config: EnvConfig, batch_size: int) -> None:
        self.config = config
        self.batch_size = batch_size
        self.device = torch.device(config.device)
        self.tokenizer = load_tokenizer(config.reference)
        self.reference = load_frozen_causal_lm(config.reference, config.device, config.dtype)
        self.reward_fn = load_reward(config.reward, config.device, config.dtype)
        self.gold_fn = load_reward(config.gold, config.device) if config.gold else None
        # Rewards are known by what they can do (textenv.rewards.capabilities): one that reads
        # this reference's own forward gives log ρ with its scores (one forward, not two); one
        # that reads this tokenizer's ids gets the generated ids (no decode and re-tokenise).
        ref_param = next(self.reference.parameters())
        self.shared_forward_reward = (
            self.reward_fn
            if shares_reference_forward(
                self.reward_fn, config.reference, ref_param.device, ref_param.dtype
            )
            else None
        )
        self.reward_reads_ids = reads_token_ids(self.reward_fn, self.tokenizer)
        self.gold_reads_ids = self.gold_fn is not None and reads_token_ids(
            self.gold_fn, self.tokenizer
        )
        # Decoding with skip_special_tokens drops these; the ids handed to a reward drop them too.
        self._special_ids = np.asarray(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)
        self.prompts: list[Prompt] = load_prompts(
            config.prompts, config.split, eval_fraction=config.eval_fraction
        )
        # A reward callable with the wrong signature or output fails now, not at the first
        # episode end: one call on a real prompt with an empty completion (a possible outcome).
        trial = ([self.prompts[0].text], [""], [dict(self.prompts[0].metadata)])
        check_user_reward(config.reward, self.reward_fn, "reward", trial)
        check_user_reward(config.gold, self.gold_fn, "gold scorer", trial)
        self.controller = make_kl_controller(config.kl_coef, config.kl_target, config.kl_horizon)
        self.vocab_size = int(self.reference.get_output_embeddings().weight.shape[0])
        self.eos_id = int(self.tokenizer.eos_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.P, self.N = config.max_prompt_tokens, config.max_new_tokens
        self.L = self.P + self.N
        if self.L > getattr(self.reference.config, "n_positions", self.L):
            raise ValueError(
                f"max_prompt_tokens + max_new_tokens = {self.L} exceeds the reference model's "
                f"{self.reference.config.n_positions} positions"
            )
        # GPT-2-style configs alias this to n_positions (checked above); rotary (Llama-style)
        # models run past the length they were trained on, but their log-probs there, which
        # anchor the KL term, are out of distribution; a state-space model has no such length.
        trained = getattr(self.reference.config, "max_position_embeddings", None)
        if self.L > (trained or self.L):
            warnings.warn(
                f"max_prompt_tokens + max_new_tokens = {self.L} exceeds the {trained} positions "
                f"the reference model was trained on (max_position_embeddings): its log-probs "
                f"past them are unreliable",
                stacklevel=3,
            )
        self.incremental = config.kl_reward == "per_token" or config.uses_action_mask
        self._mask_sampling = SamplingConfig(
            config.temperature, config.action_mask_top_k, config.action_mask_top_p
        )
        self._encode_text = PromptEncoder(self.tokenizer, self.P)
        self.warned_no_logprob = False

        B, N, L = batch_size, self.N, self.L
        self.obs_ids = np.full((B, L), self.pad_id, dtype=np.int64)
        self.obs_mask = np.zeros((B, L), dtype=np.int64)
        self.n_gen = np.zeros(B, dtype=np.int64)
        self.logp = np.full((B, N), np.nan)
        self.step_ref = np.full((B, N), np.nan)
        self.active = np.zeros(B, dtype=bool)  # started and not finished
        # The step every row is at while all rows started together and none has finished (a
        # lockstep batch, and the single env); None otherwise. apply() then writes one column.
        self.lockstep_t: int | None = None
        self.row_prompt: list[Prompt | None] = [None] * B
        self._ref_lm: IncrementalLM | None = None
        self._ref_next: torch.Tensor | None = None  # (B, V) reference logits for the next token
        self._ref_dirty = True

    # ------------------------------------------------------------------ spaces

    def observation_space(self) -> spaces.Dict:
        V, L = self.vocab_size, self.L
        return spaces.Dict(
            {
                "input_ids": spaces.Box(0, V - 1, (L,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, (L,), dtype=np.int64),
            }
        )

    def action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.vocab_size)

    # ------------------------------------------------------------------ episodes

    def resolve_prompt(self, prompt: Any) -> Prompt:
        if isinstance(prompt, Prompt):
            return prompt
        if isinstance(prompt, str):
            return Prompt(check_prompt_text(prompt, "reset option prompt"))
        if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
            text = check_prompt_text(prompt["prompt"], "reset option prompt")
            return Prompt(text, {k: v for k, v in prompt.items() if k != "prompt"})
        raise ValueError(f"a prompt must be a string or a {{'prompt': str}} dict, got {prompt!r}")

    def _encode(self, prompt: Prompt) -> list[int]:
        return self._encode_text(prompt.text)

    def start(self, rows: np.ndarray, prompts: list[Prompt]) -> None:
        """Begin new episodes on ``rows`` with the given prompts."""
        if len(rows):
            # All rows' prompts in one left-padded block (no per-row numpy writes).
            ids, mask = left_pad_arrays([self._encode(p) for p in prompts], self.pad_id)
            self.obs_ids[rows] = self.pad_id
            self.obs_mask[rows] = 0
            self.obs_ids[rows, self.P - ids.shape[1] : self.P] = ids
            self.obs_mask[rows, self.P - ids.shape[1] : self.P] = mask
        for row, prompt in zip(rows, prompts):
            self.row_prompt[row] = prompt
        self.n_gen[rows] = 0
        self.logp[rows] = np.nan
        self.step_ref[rows] = np.nan
        self.active[rows] = True
        self.lockstep_t = 0 if len(rows) == self.batch_size else None
        self._ref_dirty = True

    def observation(self, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.obs_ids[rows].copy(),
            "attention_mask": self.obs_mask[rows].copy(),
        }

    # ------------------------------------------------------------------ reference, incremental

    def _ref_logits(self) -> torch.Tensor:
        """Reference logits (B, V) for each row's next token, via the KV-cached reference."""
        if self._ref_dirty or self._ref_lm is None:
            ids = torch.as_tensor(self.obs_ids, device=self.device)
            mask = torch.as_tensor(self.obs_mask, device=self.device)
            width = self.P + int(self.n_gen.max())
            ids, mask = ids[:, :width], mask[:, :width]
            lm = IncrementalLM(self.reference)
            logits = lm.prefill(ids, mask, all_positions=True)
            # Rows have different lengths: read each row's logits at its own last real token.
            last = torch.as_tensor(self.P + self.n_gen - 1, device=self.device)
            self._ref_next = logits[torch.arange(self.batch_size), last]
            self._ref_lm = lm
            self._ref_dirty = False
        return self._ref_next

    def _advance_reference(self, actions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """log ρ of each row's action (B,), then feed ``actions[rows]`` to the KV-cached reference;
        rows not stepped keep their pending next-token logits."""
        logits = self._ref_logits()
        taken = torch.as_tensor(actions, device=self.device)  # the envs checked them: in [0, V)
        ref_lp = torch.log_softmax(logits / self.config.temperature, dim=-1)
        step_ref = ref_lp.gather(-1, taken[:, None]).squeeze(-1).double().cpu().numpy()
        stepped = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        stepped[torch.as_tensor(rows, device=self.device)] = True
        self._ref_next = torch.where(stepped[:, None], self._ref_lm.step(taken, stepped), logits)
        return step_ref

    def action_masks(self) -> np.ndarray:
        """(B, V) bool: tokens inside the reference's top-k / top-p set (NLPO-style masking)."""
        if not self.config.uses_action_mask:
            return np.ones((self.batch_size, self.vocab_size), dtype=bool)
        logprobs = next_token_logprobs(self._ref_logits(), self._mask_sampling)
        return torch.isfinite(logprobs).cpu().numpy()

    # ------------------------------------------------------------------ stepping

    def apply(
        self, actions: np.ndarray, logprobs: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Finished | None]:
        """Append ``actions[rows]`` to those rows; returns rewards, terminated, truncated, finished.

        ``logprobs`` holds log π of each action, NaN where the agent supplied none.
        """
        B = self.batch_size
        rewards = np.zeros(B)
        if len(rows) == 0:
            return rewards, np.zeros(B, dtype=bool), np.zeros(B, dtype=bool), None
        lockstep_t = self.lockstep_t if len(rows) == B else None
        if lockstep_t is not None:
            # Every row at the same step: one column of whole-array writes, and the step's flags
            # from the token alone (a per-call cost, not a per-row one, dominates at B = 64).
            idx = sel = slice(None)
            t, tokens, lp = lockstep_t, actions, logprobs
        else:
            # Rows at different steps: row selections (basic slices when every row steps).
            idx, t = rows, self.n_gen[rows]
            sel = slice(None) if len(rows) == B else rows
            tokens, lp = actions[sel], logprobs[sel]
        if self.incremental:
            # before the tokens enter the obs
            step_ref = self._advance_reference(actions, rows)[sel]
            self.step_ref[idx, t] = step_ref
            if self.config.kl_reward == "per_token":
                k = kl_estimate(
                    np.where(np.isnan(lp), step_ref, lp),
                    step_ref,
                    self.config.kl_estimator,
                    max_log_ratio=K3_MAX_LOG_RATIO,
                )
                rewards[sel] = -self.controller.value * k
        col = self.P + t
        self.obs_ids[idx, col] = tokens
        self.obs_mask[idx, col] = 1
        self.logp[idx, t] = lp
        self.n_gen[sel] += 1
        term = tokens == self.eos_id
        if lockstep_t is not None:
            terminated = term
            if lockstep_t + 1 < self.N:
                truncated = np.zeros(B, dtype=bool)
                if not term.any():
                    self.lockstep_t = lockstep_t + 1
                    return rewards, terminated, truncated, None
                done_rows = rows[term]
            else:  # the last step: every row ends, by EOS or truncation
                truncated, done_rows = ~term, rows
            self.lockstep_t = None  # the finished rows leave the batch
        else:
            terminated = np.zeros(B, dtype=bool)
            truncated = np.zeros(B, dtype=bool)
            trunc = (self.n_gen[sel] >= self.N) & ~term
            terminated[sel] = term
            truncated[sel] = trunc
            done_rows = rows[term | trunc]
        finished = None
        if len(done_rows):
            try:
                finished = self._finish(done_rows, truncated)
            except BaseException:
                # A raising reward function must not leave half a step behind: take the tokens
                # back so the same step can be retried (or the rows reset).
                self.obs_ids[idx, col] = self.pad_id
                self.obs_mask[idx, col] = 0
                self.logp[idx, t] = np.nan
                self.step_ref[idx, t] = np.nan
                self.n_gen[idx] -= 1
                self.lockstep_t = lockstep_t
                self._ref_dirty = True  # the KV-cached reference already took the tokens
                raise
            rewards[done_rows] += self._final_reward(finished)
        return rewards, terminated, truncated, finished

    def _finish(self, rows: np.ndarray, truncated: np.ndarray) -> Finished:
        """Score all rows that finished on this step: one reference pass, one RM call."""
        n_tok = self.n_gen[rows].copy()
        width = int(n_tok.max())
        # The finished rows' prompt and generated blocks, gathered once for the reference pass,
        # the texts and an ids-reading reward.
        prompt_ids, prompt_mask = self.obs_ids[rows, : self.P], self.obs_mask[rows, : self.P]
        gen_ids = self.obs_ids[rows, self.P : self.P + width]
        gen_mask = self.obs_mask[rows, self.P : self.P + width]
        rm = None
        if self.incremental:
            ref = self.step_ref[rows].copy()
        else:
            tensors = [
                torch.as_tensor(block, device=self.device)
                for block in (prompt_ids, prompt_mask, gen_ids, gen_mask)
            ]
            with torch.no_grad():
                if self.shared_forward_reward is not None:
                    # The reward reads the reference's forward: log ρ and the reward from one.
                    lp, rm = self.shared_forward_reward.reference_logprobs_and_scores(
                        *tensors, self.config.temperature
                    )
                    rm = check_scores(rm, len(rows), name=f"reward model {self.config.reward!r}")
                else:
                    lp = sequence_logprobs(self.reference, *tensors, self.config.temperature)
            ref = np.full((len(rows), self.N), np.nan)
            ref[:, :width] = lp.double().cpu().numpy()
            ref[:, :width][gen_mask == 0] = np.nan
        logp = self.logp[rows].copy()
        logp = np.where(np.isnan(logp), ref, logp)  # no log π from the agent: KL term 0
        k = kl_estimate(logp, ref, self.config.kl_estimator, max_log_ratio=K3_MAX_LOG_RATIO)
        kl = np.nansum(k, axis=1)
        prompts = [self.row_prompt[r].text for r in rows]
        metadata = [dict(self.row_prompt[r].metadata) for r in rows]
        gen_rows = gen_ids.tolist()
        texts = decode_rows(self.tokenizer, [ids[:n] for ids, n in zip(gen_rows, n_tok.tolist())])
        token_rows = (
            self._token_rows(prompt_ids, prompt_mask, gen_ids, gen_mask, gen_rows)
            if self.reward_reads_ids or self.gold_reads_ids
            else None
        )
        if rm is None:
            rm = self._score(
                self.reward_fn, self.reward_reads_ids, f"reward model {self.config.reward!r}",
                prompts, texts, token_rows, metadata,
            )  # fmt: skip
        gold = None
        if self.gold_fn is not None:
            gold = self._score(
                self.gold_fn, self.gold_reads_ids, f"gold scorer {self.config.gold!r}",
                prompts, texts, token_rows, metadata,
            )  # fmt: skip
        penalty = np.zeros(len(rows))
        if self.config.missing_eos_penalty is not None:
            penalty = np.where(truncated[rows], float(self.config.missing_eos_penalty), 0.0)
        kl_coef = self.controller.value
        self.controller.update(float(kl.mean()), len(rows))
        self.active[rows] = False
        return Finished(
            rows=rows,
            rm_score=rm,
            gold_score=gold,
            kl=kl,
            kl_coef=kl_coef,
            ref_logprobs=ref,
            logprobs=logp,
            text=texts,
            prompt=prompts,
            num_tokens=n_tok,
            penalty=penalty,
        )

    @staticmethod
    def _score(
        reward: Any,
        reads_ids: bool,
        name: str,
        prompts: list[str],
        texts: list[str],
        token_rows: tuple[list[list[int]], list[list[int]]] | None,
        metadata: list[dict[str, Any]],
    ) -> np.ndarray:
        """Checked scores from ``reward``: of the token ids when it reads them, else of the text."""
        if reads_ids:
            raw = reward.score_token_ids(*token_rows, metadata)
            return check_scores(raw, len(texts), name=name)
        return score(reward, prompts, texts, metadata, name=name)

    def _token_rows(
        self,
        prompt_ids: np.ndarray,
        prompt_mask: np.ndarray,
        gen_ids: np.ndarray,
        gen_mask: np.ndarray,
        gen_rows: list[list[int]],
    ) -> tuple[list[list[int]], list[list[int]]]:
        """What an ids-reading reward gets: each row's prompt ids (no padding) and generated
        ids without special tokens (what the decoded text holds); ``gen_rows`` is ``gen_ids``
        as lists."""
        prompt_real = prompt_mask == 1
        keep = (gen_mask == 1) & ~np.isin(gen_ids, self._special_ids)
        # A whole block in one tolist() when it drops nothing (full prompts; completions of one
        # length without special tokens: a lockstep batch), else row by row.
        if prompt_real.all():
            prompts = prompt_ids.tolist()
        else:
            prompts = [ids[real].tolist() for ids, real in zip(prompt_ids, prompt_real)]
        if keep.all():
            completions = gen_rows
        else:
            completions = [ids[k].tolist() for ids, k in zip(gen_ids, keep)]
        return prompts, completions

    def _final_reward(self, fin: Finished) -> np.ndarray:
        mode = self.config.kl_reward
        reward = fin.rm_score - fin.penalty
        if mode == "terminal":
            reward = reward - fin.kl_coef * fin.kl
        # per_token: the last token's −β·k was already added in apply(); "none": RM only.
        return reward

    def set_kl_coef(self, value: float) -> None:
        value = float(value)
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"KL coefficient β must be a finite number ≥ 0, got {value}")
        self.controller.value = value

    def warn_no_logprob(self) -> None:
        """A step without log π: an error under ``kl_logprob="require"``, else a warning once,
        attributed to the first caller outside textenv and Gymnasium (the user's ``step`` call,
        through any number of env layers and wrappers)."""
        level, frame = 1, sys._getframe(1)  # level 1: the frame that called this method
        while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
            level, frame = level + 1, frame.f_back
        # report_missing_logprob counts its own frame and this one on top of ours.
        report_missing_logprob(self.config.kl_logprob, self.warned_no_logprob, stacklevel=level + 1)
        self.warned_no_logprob = True


class EpisodeBatchAccess:
    """The properties both envs expose from their :class:`EpisodeBatch` ``core`` (one home for
    the single and the vector env)."""

    core: EpisodeBatch

    @property
    def kl_coef(self) -> float:
        """The current β (settable, e.g. to restore an adaptive controller on resume)."""
        return self.core.controller.value

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.core.set_kl_coef(check_real("kl_coef", value))

    @property
    def tokenizer(self) -> Any:
        return self.core.tokenizer
