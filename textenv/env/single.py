"""The single-episode RLHF text-generation env."""

from __future__ import annotations

import numbers
import sys
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit

from textenv.env.config import EnvConfig
from textenv.env.core import EpisodeBatch, Finished

__all__ = ["TextGenEnv", "validate_action", "validate_logprob"]


def validate_action(action: Any, vocab_size: int) -> int:
    """An int-like action in ``[0, vocab_size)``, or a clear error."""
    if isinstance(action, np.ndarray):
        if action.size != 1:
            raise ValueError(
                f"action must be a single token id, got an array of shape {action.shape}"
            )
        action = action.reshape(()).item() if np.issubdtype(action.dtype, np.integer) else action
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, numbers.Integral):
        raise TypeError(
            f"action must be an integer token id, got {action!r} ({type(action).__name__})"
        )
    action = int(action)
    if not 0 <= action < vocab_size:
        raise ValueError(f"action {action} is outside the vocabulary [0, {vocab_size})")
    return action


def validate_logprob(value: Any) -> float:
    """A log-probability: a finite number ≤ 0 (a little slack for rounding)."""
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"log π must be a number, got {value!r}") from exc
    if not np.isfinite(x) or x > 1e-4:
        raise ValueError(f"log π must be a finite log-probability ≤ 0, got {x}")
    return min(x, 0.0)


class TextGenEnv(gym.Env[dict, int]):
    """Token-level text generation as an MDP, rewarded by a reward model minus a KL penalty.

    ## Description
    A prompt is drawn from a prompt source; each step the agent appends one token. When the
    episode ends, a reward model scores ``(prompt, completion)`` and a KL term keeps the agent
    close to a frozen reference LM ρ: ``reward = RM − β·Σ_t k(log π(a_t|s_t), log ρ(a_t|s_t))``.

    ## Action Space
    ``Discrete(V)``: the next token id, V the reference model's vocabulary (logit count).

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_new_tokens``, laid out as
    ``[left-padded prompt | generated tokens | right padding]``; pad id = the tokenizer's.

    ## Rewards
    ``kl_reward="terminal"`` (default): 0 until the last step, then ``RM − β·KL̂``.
    ``"per_token"``: ``−β·k_t`` every step, plus ``RM`` at the last step. ``"none"``: ``RM`` only
    (for agents with KL in their loss; the reference log-probs are in ``info``).
    ``missing_eos_penalty`` is subtracted when the episode is truncated without EOS.

    **The log π channel.** Only the agent knows π. Before ``step`` call
    ``env.unwrapped.set_action_logprob(x)`` with the log-prob of the action under the
    distribution actually sampled from (temperature included; ρ is scored at ``temperature``).
    Without it that token's log π is taken as log ρ (it adds 0 to KL̂), the env warns once, and
    ``info["logprob_source"]`` says ``"agent"`` or ``"none"`` on every step.

    ## Starting State
    A prompt drawn uniformly (with ``self.np_random``) from the split, or the one passed as
    ``reset(options={"prompt": ...})``. Over-long prompts are left-truncated.

    ## Episode End
    ``terminated`` when the agent emits EOS; ``truncated`` after ``max_new_tokens`` tokens.
    The registered ``max_episode_steps`` must equal ``max_new_tokens`` (a shorter TimeLimit
    would silently cut off the final reward), checked on ``reset``.

    On the last step ``info`` holds ``rm_score``, ``kl``, ``kl_coef``, ``ref_logprobs``
    and ``logprobs`` (log ρ and the log π used, one per generated token; the vector env pads
    them to ``(B, max_new_tokens)`` with NaN), ``logprob_source``,
    ``text`` (the completion), ``prompt``, ``num_tokens``, ``penalty`` (missing-EOS penalty
    applied), and ``gold_score`` where the task has a gold scorer.

    ## Arguments
    See :class:`textenv.env.config.EnvConfig`: ``reference``, ``reward``, ``prompts``, ``gold``,
    ``split``, ``max_prompt_tokens``, ``max_new_tokens``, ``kl_coef``, ``kl_estimator``
    (k1/k2/k3), ``kl_target`` (adaptive β when set), ``kl_horizon``, ``kl_reward``,
    ``temperature``, ``missing_eos_penalty``, ``action_mask_top_k``/``action_mask_top_p``
    (enables ``action_masks()`` for MaskablePPO), ``device``, ``dtype``, ``render_mode``.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode == "rgb_array":  # SB3's make_vec_env asks for it by default
            warnings.warn(
                "textenv renders text only (render_mode='ansi'); render_mode='rgb_array' renders "
                "nothing",
                stacklevel=2,
            )
            render_mode = None
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.config = EnvConfig(**kwargs)
        self.core = EpisodeBatch(self.config, batch_size=1)
        self.observation_space = self.core.observation_space()
        self.action_space = self.core.action_space()
        self._pending_logprob: float | None = None
        self._started = False
        self._done = False

    # ------------------------------------------------------------------ API

    @property
    def kl_coef(self) -> float:
        """The current β (settable, e.g. to restore an adaptive controller on resume)."""
        return self.core.controller.value

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.core.set_kl_coef(value)

    @property
    def tokenizer(self) -> Any:
        return self.core.tokenizer

    def set_action_logprob(self, logprob: float) -> None:
        """log π of the action about to be passed to ``step`` (consumed by that step)."""
        self._pending_logprob = validate_logprob(logprob)

    def action_masks(self) -> np.ndarray:
        """Bool ``(V,)``: the reference's top-k/top-p set for the next token (for MaskablePPO)."""
        return self.core.action_masks()[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._check_time_limit()
        options = options or {}
        if "prompt" in options:
            prompt = self.core.resolve_prompt(options["prompt"])
        else:
            prompt = self.core.prompts[int(self.np_random.integers(len(self.core.prompts)))]
        self.core.start(np.array([0]), [prompt])
        self._pending_logprob = None
        self._started, self._done = True, False
        return self.core.observation(0), {"prompt": prompt.text}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        if self._done:
            raise RuntimeError(
                "step() called after the episode ended (terminated or truncated); call reset()"
            )
        token = validate_action(action, self.core.vocab_size)
        logprob = self._pending_logprob
        self._pending_logprob = None
        source = "agent" if logprob is not None else "none"
        if logprob is None:
            self.core.warn_no_logprob()
        rewards, terminated, truncated, finished = self.core.apply(
            np.array([token]), np.array([np.nan if logprob is None else logprob]), np.array([0])
        )
        info: dict[str, Any] = {"logprob_source": source}
        if finished is not None:
            self._done = True
            info.update(_final_info(finished, 0))
        return (
            self.core.observation(0),
            float(rewards[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            info,
        )

    def _check_time_limit(self) -> None:
        limit = _enclosing_time_limit(self)
        if limit is not None and limit != self.config.max_new_tokens:
            raise ValueError(
                f"max_episode_steps={limit} does not match max_new_tokens="
                f"{self.config.max_new_tokens}: a TimeLimit that cuts episodes early would lose the "
                f"final reward. Pass both, e.g. gym.make(id, max_new_tokens=N, max_episode_steps=N)"
            )

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        core = self.core
        prompt = core.row_prompt[0].text if core.row_prompt[0] else ""
        n = int(core.n_gen[0])
        completion = core.tokenizer.decode(core.obs_ids[0, core.P : core.P + n])
        return f"{prompt}\x1b[1m{completion}\x1b[0m" if completion else prompt


def _enclosing_time_limit(env: gym.Env) -> int | None:
    """``max_episode_steps`` of the TimeLimit wrapping ``env``, if a caller frame is one.

    ``gym.make`` hides the TimeLimit from the env it wraps (the unwrapped spec says None), and
    vector entry points forbid extra registered wrappers, so the frames of the ``reset`` call are
    the one place the env can see it.
    """
    frame = sys._getframe(2)
    while frame is not None:
        caller = frame.f_locals.get("self")
        if isinstance(caller, TimeLimit) and caller.unwrapped is env:
            return caller._max_episode_steps
        frame = frame.f_back
    return None


def _final_info(fin: Finished, i: int) -> dict[str, Any]:
    info = {
        "rm_score": float(fin.rm_score[i]),
        "kl": float(fin.kl[i]),
        "kl_coef": float(fin.kl_coef),
        "ref_logprobs": fin.ref_logprobs[i, : fin.num_tokens[i]].copy(),
        "logprobs": fin.logprobs[i, : fin.num_tokens[i]].copy(),
        "text": fin.text[i],
        "prompt": fin.prompt[i],
        "num_tokens": int(fin.num_tokens[i]),
        "penalty": float(fin.penalty[i]),
    }
    if fin.gold_score is not None:
        info["gold_score"] = float(fin.gold_score[i])
    return info
