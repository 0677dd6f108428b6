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
from textenv.env.core import EpisodeBatch, EpisodeBatchAccess, Finished
from textenv.env.kl import LOGPROB_MIN, LOGPROB_SLACK, check_logprob

__all__ = [
    "TextGenEnv",
    "validate_action",
    "check_seed",
    "check_options",
    "reset_info",
    "reset_info_columns",
]


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


def check_seed(seed: Any) -> int | None:
    """``reset(seed=...)``: None or a non-negative integer (not a bool, not a float)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a non-negative integer or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def check_options(options: Any, accepted: tuple[str, ...], other: dict[str, str]) -> dict:
    """``reset(options=...)``: a dict with only ``accepted`` keys; ``other`` maps a key that
    belongs elsewhere to where it belongs (e.g. ``"prompts"`` to the vector env)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"reset options must be a dict or None, got {options!r:.80}")
    for key in options:
        if key in other:
            raise ValueError(f"reset option {key!r} is not accepted here: {other[key]}")
        if key not in accepted:
            raise ValueError(f"unknown reset option {key!r}; this env accepts {list(accepted)}")
    return options


def reset_info_columns(core: EpisodeBatch) -> dict[str, np.ndarray]:
    """What an agent needs to read the observation, one array over the rows per key: the prompt,
    its token count and the special token ids (pad fills the unused columns; EOS ends the
    episode; BOS may open a prompt). Text, and a missing BOS (None), are object arrays."""
    B = core.batch_size
    bos = core.tokenizer.bos_token_id
    prompts = np.empty(B, dtype=object)
    prompts[:] = [p.text if p is not None else None for p in core.row_prompt]
    return {
        "prompt": prompts,
        "prompt_tokens": core.obs_mask[:, : core.P].sum(axis=1, dtype=np.int64),
        "pad_token_id": np.full(B, core.pad_id, dtype=np.int64),
        "eos_token_id": np.full(B, core.eos_id, dtype=np.int64),
        "bos_token_id": np.full(B, bos, dtype=object if bos is None else np.int64),
    }


def reset_info(core: EpisodeBatch, row: int) -> dict[str, Any]:
    """Row ``row`` of :func:`reset_info_columns` as Python values (the single env's reset info)."""
    return {
        key: values[row] if values.dtype == object else values[row].item()
        for key, values in reset_info_columns(core).items()
    }


class TextGenEnv(EpisodeBatchAccess, gym.Env[dict, int]):
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
    ``[left-padded prompt | generated tokens | right padding]``: the prompt fills columns
    ``max_prompt_tokens - info["prompt_tokens"]`` to ``max_prompt_tokens - 1``, the token of step
    ``t`` (from 0) lands in column ``max_prompt_tokens + t``, and ``attention_mask`` is 1 exactly
    on the prompt and the generated tokens. Unused columns hold the pad id. ``info`` at reset
    holds ``prompt``, ``prompt_tokens``, ``pad_token_id``, ``eos_token_id`` and ``bos_token_id``
    (pad, EOS and BOS may be the same id, as on the built-in tasks; a tokenizer without a pad
    token pads with EOS). A tokenizer that adds BOS by itself (Llama-style) keeps it in front
    of the prompt.

    ## Rewards
    ``kl_reward="terminal"`` (default): 0 until the last step, then ``RM − β·KL̂``.
    ``"per_token"``: ``−β·k_t`` every step, plus ``RM`` at the last step. ``"none"``: ``RM`` only
    (for agents with KL in their loss; the reference log-probs are in ``info``).
    ``missing_eos_penalty`` is subtracted when the episode is truncated without EOS.

    **The log π channel.** Only the agent knows π. Before ``step`` call
    ``env.unwrapped.set_action_logprob(x)`` with the log-prob of the action under the
    distribution actually sampled from (temperature included; ρ is scored at ``temperature``):
    a Python float, a numpy scalar or one-element array, or a one-element torch tensor on any
    device, finite and in ``[-1000, 0]`` (see :mod:`textenv.env.kl`). Without it that token's
    log π is taken as log ρ (it adds 0 to KL̂) and the env warns once, naming the fix; with
    ``kl_logprob="require"`` a step without it raises instead. ``info["logprob_source"]`` says
    ``"agent"`` or ``"none"`` on every step. For k3 the per-token log ratio is clamped to ±10.

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
    ``kl_logprob`` (``"warn"`` or ``"require"``), ``temperature``, ``missing_eos_penalty``, ``action_mask_top_k``/``action_mask_top_p``
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
        self.config = EnvConfig.from_kwargs(kwargs)
        self.core = EpisodeBatch(self.config, batch_size=1)
        self.observation_space = self.core.observation_space()
        self.action_space = self.core.action_space()
        self._pending_logprob: float | None = None
        self._started = False
        self._done = False

    # ------------------------------------------------------------------ API

    def set_action_logprob(self, logprob: Any) -> None:
        """log π of the action about to be passed to ``step`` (consumed by that step): a float,
        a numpy scalar/one-element array or a one-element torch tensor (any device)."""
        if type(logprob) is float and LOGPROB_MIN <= logprob <= LOGPROB_SLACK:
            # A sampler's plain float, every step: check_logprob's rule (NaN and ±inf fail the
            # comparison) and result (capped at 0) without its array round trip.
            self._pending_logprob = min(0.0, logprob)
            return
        self._pending_logprob = check_logprob(logprob)

    def action_masks(self) -> np.ndarray:
        """Bool ``(V,)``: the reference's top-k/top-p set for the next token (for MaskablePPO)."""
        return self.core.action_masks()[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=check_seed(seed))
        self._check_time_limit()
        options = check_options(
            options,
            ("prompt",),
            {
                "prompts": "it is the vector env's; the single env takes options={'prompt': p}",
                "reset_mask": "it is the vector env's; a single env always resets",
            },
        )
        if "prompt" in options:
            prompt = self.core.resolve_prompt(options["prompt"])
        else:
            prompt = self.core.prompts[int(self.np_random.integers(len(self.core.prompts)))]
        self.core.start(np.array([0]), [prompt])
        self._pending_logprob = None
        self._started, self._done = True, False
        return self.core.observation(0), reset_info(self.core, 0)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        if self._done:
            raise RuntimeError(
                "step() called after the episode ended (terminated or truncated); call reset()"
            )
        token = validate_action(action, self.core.vocab_size)
        logprob = self._pending_logprob
        source = "agent" if logprob is not None else "none"
        if logprob is None:
            self.core.warn_no_logprob()  # raises under kl_logprob="require"
        # The core undoes a step whose reward function raised; the log π stays pending for the
        # retry.
        rewards, terminated, truncated, finished = self.core.apply(
            np.array([token]), np.array([np.nan if logprob is None else logprob]), np.array([0])
        )
        self._pending_logprob = None
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
