"""The native batched env: B episodes advance with one batched model call per finished batch."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textenv.env.config import EnvConfig
from textenv.env.core import EpisodeBatch, EpisodeBatchAccess, Finished
from textenv.env.kl import LOGPROB_MIN, LOGPROB_SLACK, check_logprobs
from textenv.env.row_seeds import RowStreams
from textenv.env.single import check_options, check_seed, reset_info_columns

__all__ = ["TextGenVectorEnv"]


class TextGenVectorEnv(EpisodeBatchAccess, VectorEnv):
    """B copies of :class:`~textenv.env.TextGenEnv` run as one batch.

    Same MDP as the single env (it shares :class:`~textenv.env.core.EpisodeBatch`), so with the same
    seeds, actions and log-probs it gives the same rewards as ``gym.make_vec(..., "sync")``:
    row ``i`` draws its prompts from an RNG seeded with ``seed + i``, like sub-env ``i``.

    Autoreset modes (``autoreset_mode=`` kwarg):

    * ``NEXT_STEP`` (Gymnasium's default): the step after a row finishes resets that row (its
      action is ignored) and returns the new episode's first observation with reward 0.
    * ``DISABLED`` (what the package's agents use): rows move in lockstep. ``reset`` starts all
      rows (``options={"prompts": [...]}`` pins one prompt per row, e.g. G rows on one prompt for
      GRPO; ``options={"reset_mask": mask}`` restarts some rows); finished rows ignore further
      actions and return reward 0 and ``terminated = truncated = False`` until the next reset.

    ``info`` uses Gymnasium's vector convention: each key maps to an array over the batch with a
    boolean ``"_key"`` array marking the rows it is set for; per-token arrays are
    ``(B, max_new_tokens)`` padded with NaN; ``info["logprob_source"]`` is set every step.
    ``info`` at reset holds, per row, ``prompt``, ``prompt_tokens``, ``pad_token_id``,
    ``eos_token_id`` and ``bos_token_id`` (the observation layout is the single env's).

    **log π on the autoreset step** (``NEXT_STEP``): the step after a row finished only resets
    that row; its action and its log π are ignored (pass any valid token and NaN), and its
    ``info["logprob_source"]`` is not set (``info["_logprob_source"]`` is False there).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or DISABLED, got {mode}")
        if render_mode is not None:
            raise ValueError("the vector env does not render; use the single env's 'ansi' mode")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.num_envs = num_envs
        self.render_mode = None
        self.config = EnvConfig.from_kwargs(kwargs)
        # gym.make_vec passes the registered max_episode_steps along; the native env has no
        # TimeLimit that could cut an episode before it is scored (it truncates itself at
        # max_new_tokens), so overriding only max_new_tokens is safe here and the value is unused.
        del max_episode_steps
        self.core = EpisodeBatch(self.config, batch_size=num_envs)
        self.single_observation_space = self.core.observation_space()
        self.single_action_space = self.core.action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        # Row i draws its prompts as the sub-env seeded with seed + i would (one PCG64 each).
        self._streams = RowStreams(num_envs)
        self._pending: np.ndarray | None = None
        self._pending_complete = False  # the pending log π has no NaN (a row without one)
        self._all_rows = np.arange(num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._started = False
        # info["logprob_source"] starts from a copy of this each step (cheaper than building it).
        self._agent_source = np.full(num_envs, "agent", dtype=object)

    # ------------------------------------------------------------------ API

    @property
    def prompts(self) -> list:
        """The prompts of this env's split."""
        return self.core.prompts

    def set_action_logprobs(self, logprobs: Any) -> None:
        """log π of each row's next action, shape ``(B,)``: a numpy array, a torch tensor (any
        device) or a list of floats; NaN for a row means "none" (that token adds 0 to KL̂)."""
        if (
            type(logprobs) is np.ndarray
            and logprobs.dtype.kind == "f"
            and logprobs.shape == (self.num_envs,)
        ):
            # What a sampler hands over every step: check_logprobs's rule in two reductions
            # and its result (float64, capped at 0). NaN-propagating min and max pass only
            # finite values in range (NaN and ±inf fail the comparison): no row lacks log π.
            values = logprobs.astype(np.float64)
            high = np.maximum.reduce(values)
            if LOGPROB_MIN <= np.minimum.reduce(values) and high <= LOGPROB_SLACK:
                if high >= 0.0:  # (also −0.0, which the cap writes as 0.0)
                    np.minimum(values, 0.0, out=values)
                self._pending, self._pending_complete = values, True
                return
            # Some NaN ("none" for those rows): the same rule on the other rows.
            low, high = np.fmin.reduce(values), np.fmax.reduce(values)
            if not (low < LOGPROB_MIN or high > LOGPROB_SLACK):
                self._pending = np.minimum(values, 0.0, out=values)
                self._pending_complete = False
                return
        # Anything else, and every refusal with its message, goes through the one checker.
        self._pending = check_logprobs(logprobs, self.num_envs)
        self._pending_complete = False  # (step() looks for NaN rows)

    def action_masks(self) -> np.ndarray:
        """Bool ``(B, V)``: the reference's top-k / top-p set per row."""
        return self.core.action_masks()

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        B = self.num_envs
        if seed is not None:
            if isinstance(seed, (list, tuple, np.ndarray)):
                seeds = [check_seed(s) for s in seed]
                if len(seeds) != B:
                    raise ValueError(f"seed: expected {B} seeds, got {len(seeds)}")
            else:
                first = check_seed(seed)
                seeds = [first + i for i in range(B)]
            self._streams.seed(seeds)
        options = check_options(
            options,
            ("prompts", "reset_mask"),
            {"prompt": "it is the single env's; the vector env takes options={'prompts': [...]}"},
        )
        rows = np.arange(B)
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (B,):
                raise ValueError(f"reset_mask must have shape ({B},), got {mask.shape}")
            if not self._started and not mask.all():
                raise ValueError("the first reset must reset every row")
            rows = np.flatnonzero(mask)
        if "prompts" in options:
            given = options["prompts"]
            if isinstance(given, (str, dict)):
                given = [given] * B
            elif not isinstance(given, (list, tuple)):
                raise TypeError(
                    f"options['prompts'] must be a prompt or a list of {B} prompts, got "
                    f"{given!r:.80}"
                )
            if len(given) != B:
                raise ValueError(f"options['prompts'] must hold {B} prompts, got {len(given)}")
            prompts = [self.core.resolve_prompt(given[r]) for r in rows]
        else:
            prompts = self._draw_prompts(rows)
        self.core.start(rows, prompts)
        self._needs_reset[rows] = False
        self._pending = None
        self._started = True
        # Every row's current values (rows not reset keep theirs); "_key" marks the rows reset.
        started = np.zeros(B, dtype=bool)
        started[rows] = True
        info: dict[str, Any] = {}
        for key, values in reset_info_columns(self.core).items():
            info[key], info["_" + key] = values, started
        return self.core.observation(), info

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call envs.reset() first")
        B, core = self.num_envs, self.core
        actions = self._validate_actions(actions)
        pending = self._pending
        # The bookkeeping is paid per numpy call, not per row (at B = 64 a call costs more than
        # its rows' work, more so with the caches cold after a forward): few calls per step.
        if core.lockstep_t is not None:
            # Every row active at one step (no row waits for an autoreset): nothing to look up.
            autoreset, stepped, stepped_mask = False, self._all_rows, np.ones(B, dtype=bool)
        else:
            autoreset = self.autoreset_mode == AutoresetMode.NEXT_STEP and self._needs_reset.any()
            if autoreset:
                reset_rows = self._needs_reset.nonzero()[0]
                stepped_mask = ~self._needs_reset  # every row but those being reset
            else:
                stepped_mask = core.active.copy()  # apply() clears the rows that finish
            stepped = stepped_mask.nonzero()[0]  # (np.flatnonzero's wrapper costs 5x as much)
        every = len(stepped) == B  # a lockstep step: whole arrays, no row selections below
        if pending is None:
            logprobs = np.full(B, np.nan)
            missing = np.ones(B, dtype=bool)
            stepped_missing = len(stepped) > 0
            if stepped_missing:
                core.warn_no_logprob()  # raises under kl_logprob="require"
        elif self._pending_complete:
            logprobs, stepped_missing = pending, False
        else:
            logprobs = pending
            missing = np.isnan(logprobs)
            stepped_missing = bool(missing.any() if every else missing[stepped].any())
            if stepped_missing:
                core.warn_no_logprob()
        # A raising reward function leaves nothing changed (the core undoes the step, the log π
        # stays pending, the rows to autoreset are reset only after): the step can be retried.
        rewards, terminated, truncated, finished = core.apply(actions, logprobs, stepped)
        self._pending = None
        if autoreset:
            core.start(reset_rows, self._draw_prompts(reset_rows))
            self._needs_reset[reset_rows] = False
        if finished is not None:  # (no row terminated or truncated otherwise)
            self._needs_reset |= terminated | truncated
        if finished is not None or core.incremental:  # (else all rewards are +0.0)
            rewards += 0.0  # a −0.0 reward (−β·0 per token) is reported as 0.0

        source = self._agent_source.copy()
        if stepped_missing:  # (else only rows not stepped miss one, and they read "" below)
            source[missing] = "none"
        if not every:
            source[~stepped_mask] = ""
        info: dict[str, Any] = {"logprob_source": source, "_logprob_source": stepped_mask}
        if finished is not None:
            info.update(self._final_info(finished))
        return core.observation(), rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        """Models are shared process-wide; nothing to release."""

    # ------------------------------------------------------------------ helpers

    def _draw_prompts(self, rows: np.ndarray) -> list:
        """A prompt for each of ``rows``, drawn uniformly from the split by the row's stream."""
        prompts = self.core.prompts
        return [prompts[i] for i in self._streams.integers(len(prompts), rows).tolist()]

    def _validate_actions(self, actions: Any) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.shape != (self.num_envs,):
            raise ValueError(f"expected actions of shape ({self.num_envs},), got {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"actions must be integer token ids, got dtype {arr.dtype}")
        V = self.core.vocab_size
        # int64 (a sampler's ids): one reduction for both bounds, as a negative id viewed as
        # unsigned is above any vocabulary; used as given (the env copies what it keeps).
        if arr.dtype == np.int64 and np.maximum.reduce(arr.view(np.uint64)) < V:
            return arr
        if arr.min() < 0 or arr.max() >= V:
            bad = (arr < 0) | (arr >= V)
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"action {int(arr[i])} (row {i}) is outside the vocabulary [0, {V})")
        return arr.astype(np.int64)

    def _final_info(self, fin: Finished) -> dict[str, Any]:
        B = self.num_envs
        mask = np.zeros(B, dtype=bool)
        mask[fin.rows] = True

        def scatter(values: np.ndarray, fill: Any = 0.0, dtype: Any = np.float64) -> np.ndarray:
            out = np.full((B, *np.shape(values)[1:]), fill, dtype=dtype)
            out[fin.rows] = values
            return out

        info: dict[str, Any] = {
            "rm_score": scatter(fin.rm_score),
            "kl": scatter(fin.kl),
            "kl_coef": scatter(np.full(len(fin.rows), fin.kl_coef)),
            "ref_logprobs": scatter(fin.ref_logprobs, np.nan),
            "logprobs": scatter(fin.logprobs, np.nan),
            "text": scatter(np.array(fin.text, dtype=object), "", object),
            "prompt": scatter(np.array(fin.prompt, dtype=object), "", object),
            "num_tokens": scatter(fin.num_tokens, 0, np.int64),
            "penalty": scatter(fin.penalty),
        }
        if fin.gold_score is not None:
            info["gold_score"] = scatter(fin.gold_score)
        for key in list(info):
            info["_" + key] = mask
        return info
