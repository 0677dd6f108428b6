"""What every agent shares: the config fields, the training loop, logging, save / load / resume.

An algorithm subclasses :class:`Agent` and writes two methods: ``_collect`` (one rollout batch
through :class:`~agents.policy.LMPolicy`) and ``_update`` (the gradient steps; returns metrics).

Checkpoints (:meth:`Agent.save`) are folders written atomically: ``policy/`` (a Hugging Face
folder, safetensors), ``state.safetensors`` (optimizer moments, extra modules, the RNG state),
``agent.json`` (counters, the LR schedule, β, the metrics history, the optimizer's settings) and
``config.json``. Loading never unpickles, and never imports code a checkpoint names: a
``"module:function"`` spec in its ``config.json`` (outside the built-in ``textenv.tasks``) needs
``trust_specs=True``, and its ``log_dir`` is used only when trusted or passed again.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from agents.distributed import COMPUTE_DTYPES, Dist, autocast, float32
from agents.policy import LMPolicy, Rollout, make_envs
from textenv.files import (
    append_line,
    atomic_write_dir,
    atomic_write_json,
    atomic_write_lines,
    resolve_dir,
)
from textenv.lm.models import is_callable_spec
from textenv.progress import progress
from textenv.validation import is_finite, is_int

__all__ = ["AgentConfig", "Agent", "env_return", "is_checkpoint", "UntrustedSpecError"]

CHECKPOINT_FORMAT = 2
STATE_NAME = "agent.json"  # marks a checkpoint folder
TENSORS_NAME = "state.safetensors"
LEGACY_STATE_NAME = "agent.pt"  # format 1 (pickled); read with weights_only=True
CHECKPOINT_MARKERS = (STATE_NAME, LEGACY_STATE_NAME)
# Spec prefixes a checkpoint may name without trust_specs: the package's own tasks.
TRUSTED_SPEC_PREFIXES = ("textenv.tasks.",)


@dataclass
class AgentConfig:
    """Fields every agent has.

    Attributes:
        env_id: a registered id (``"textenv/Sort-v0"``, ``"textenv/Tiny-v0"``, ...).
        env_kwargs: JSON-serialisable env kwargs (``kl_coef``, ``kl_reward``, ``reward``, ...).
        model: the policy's initial weights, a :func:`textenv.lm.models.load_causal_lm` spec;
            ``None`` = the env's reference LM (the usual RLHF start).
        num_envs: episodes per rollout batch (rows of the lockstep vector env).
        lr: Adam learning rate (decayed linearly to 0 over ``learn``'s ``total_tokens`` when
            ``anneal_lr``).
        epochs: passes over each rollout batch.
        minibatch_size: episodes per gradient step; must divide ``num_envs``.
        max_grad_norm: gradient-norm clip.
        seed: seeds sampling (a ``torch.Generator``), env resets and minibatch order.
        device: torch device of the policy (``"cuda"``: one GPU per rank). The env's models
            follow ``env_kwargs["device"]``, which defaults to this device when it is not the CPU.
        temperature: sampling temperature; ``None`` = the env's ``temperature`` (they must
            agree: the env scores the reference at its own temperature).
        log_dir: where ``metrics.jsonl`` and TensorBoard events go (``None``: no files).
        progress: report progress in ``learn`` (a bar on a terminal, a few plain lines a
            minute in a file or pipe).
        save_every: iterations between the checkpoints ``learn(..., checkpoint=PATH)`` writes,
            besides the ones when ``learn`` ends or is stopped by SIGINT / SIGTERM (0: only those;
            a SIGKILL then loses everything since the last one).
        compute_dtype: ``"float32"``, or ``"bfloat16"`` for mixed precision: the policy's
            forwards (rollouts, scoring, updates) run under ``torch.autocast``; weights, optimizer
            and the log-probs the losses use stay float32. (The env's models have their own
            ``env_kwargs["dtype"]``.)
    """

    env_id: str = "textenv/Sort-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    num_envs: int = 64
    lr: float = 3e-4
    anneal_lr: bool = True
    epochs: int = 4
    minibatch_size: int = 16
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"
    temperature: float | None = None
    log_dir: str | None = None
    progress: bool = True
    save_every: int = 10
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field (bools are not integers or numbers)."""
        for name in ("num_envs", "minibatch_size", "epochs"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not is_int(self.save_every) or self.save_every < 0:
            raise ValueError(f"save_every must be an integer ≥ 0, got {self.save_every!r}")
        if self.num_envs % self.minibatch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} does not divide the batch "
                f"(num_envs={self.num_envs})"
            )
        if not (is_finite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be a finite number ≥ 0, got {self.lr!r}")
        if not (is_finite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(
                f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm!r}"
            )
        if self.temperature is not None and not (
            is_finite(self.temperature) and self.temperature > 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        for name in ("anneal_lr", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}"
            )
        for name in ("env_id", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("model", "log_dir"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string or None, got {getattr(self, name)!r}")
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        try:
            json.dumps(self.env_kwargs)  # configs are saved with checkpoints
        except (TypeError, ValueError) as exc:
            raise ValueError(f"env_kwargs must be JSON-serialisable: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def env_return(final: dict[str, np.ndarray]) -> np.ndarray:
    """Per-episode return in the env's accounting, ``rm_score − penalty − kl_coef · kl``, from
    a rollout's final infos (``kl`` is the env's per-episode KL estimate, ``kl_coef`` the β
    in force when the episode ended). It is what ``kl_reward="terminal"`` pays, and what
    ``"per_token"`` pays in sum; agents log it as ``env/return`` whatever their ``kl_reward``."""
    penalty = final.get("penalty")
    ret = np.asarray(final["rm_score"], dtype=np.float64) - np.asarray(
        final["kl_coef"], dtype=np.float64
    ) * np.asarray(final["kl"], dtype=np.float64)
    if penalty is not None:
        ret = ret - np.asarray(penalty, dtype=np.float64)
    return ret


# --------------------------------------------------------------------------- checkpoint files


class UntrustedSpecError(ValueError):
    """A checkpoint's config names code to import, and the loading user did not opt in."""


def _resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder at ``path`` (or the previous one a killed save left)."""
    try:
        return resolve_dir(path, STATE_NAME)
    except FileNotFoundError:
        try:
            return resolve_dir(path, LEGACY_STATE_NAME)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no agent checkpoint at {Path(path)} (expected {Path(path) / STATE_NAME})"
            ) from None


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` (or the previous version a killed save left) holds a checkpoint."""
    try:
        _resolve_checkpoint(path)
    except FileNotFoundError:
        return False
    return True


def _pack(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """JSON-able skeleton of ``obj``; its tensors go to ``tensors`` (for safetensors)."""
    if isinstance(obj, torch.Tensor):
        # A copy: safetensors refuses tensors that share storage (tied weights).
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _pack(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _pack(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save {type(obj).__name__} at {key} in a checkpoint")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _unpack(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
        return {k: _unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    return obj


def _read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state, never unpickled: JSON + safetensors (format 2), or a format-1
    ``agent.pt`` read with ``weights_only=True`` (tensors and plain containers only)."""
    if (path / STATE_NAME).is_file():
        skeleton = json.loads((path / STATE_NAME).read_text())
        tensors = load_file(str(path / TENSORS_NAME)) if (path / TENSORS_NAME).is_file() else {}
        return _unpack(skeleton, tensors)
    try:
        return torch.load(path / LEGACY_STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler refuses anything but plain data
        raise ValueError(
            f"{path / LEGACY_STATE_NAME} is not a plain checkpoint (it holds objects other than "
            f"tensors and plain data; refusing to unpickle it): {exc}"
        ) from None


def _saved_specs(saved: dict[str, Any], overrides: dict[str, Any]) -> list[str]:
    """``field = spec`` for each saved value that would import code (a ``"module:function"``
    spec, or an env id ``"module:Name-v0"`` that gymnasium imports) and that the user did not
    replace with an override. Specs of the package's own tasks are allowed."""
    found = []
    env_id = saved.get("env_id")
    if "env_id" not in overrides and isinstance(env_id, str) and ":" in env_id:
        found.append(f"env_id={env_id!r}")
    env_kwargs = saved.get("env_kwargs")
    if "env_kwargs" not in overrides and isinstance(env_kwargs, dict):
        for key, value in env_kwargs.items():
            if (
                isinstance(value, str)
                and is_callable_spec(value)
                and not value.startswith(TRUSTED_SPEC_PREFIXES)
            ):
                found.append(f"env_kwargs[{key!r}]={value!r}")
    return found


class Agent:
    """Base class: builds envs + policy, runs ``learn``, logs, saves and loads."""

    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    algo: ClassVar[str] = "base"

    def __init__(self, config: AgentConfig | None = None, *, _checkpoint: Path | None = None):
        config = replace(config) if config is not None else self.config_class()
        self.config = config  # a copy: the agent may adjust env_kwargs
        config.validate()
        if _checkpoint is None:
            self._check_fresh_log_dir()
        self._configure_env_kwargs()
        # Data-parallel ranks (agents.distributed): num_envs / minibatch_size stay global, each
        # rank steps num_envs / N rows of its own; one process is world_size 1.
        self.dist = Dist.setup(config.device)
        config.device = self.dist.device(config.device)
        if "device" in config.env_kwargs:
            config.env_kwargs["device"] = self.dist.device(config.env_kwargs["device"])
        elif torch.device(config.device).type != "cpu":  # the env's models follow the policy
            config.env_kwargs["device"] = config.device
        self.dist.shard_size(config.minibatch_size, "minibatch_size")
        local_envs = self.dist.shard_size(config.num_envs, "num_envs")
        self.envs = make_envs(config.env_id, local_envs, config.env_kwargs)
        self.env = self.envs.unwrapped
        spec = str(_checkpoint / "policy") if _checkpoint is not None else config.model
        self.policy = LMPolicy(
            self.envs, spec, temperature=config.temperature, device=config.device
        )
        self._build(_checkpoint)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.parameters() if p.requires_grad],
            lr=config.lr,
            eps=1e-5,
            weight_decay=0,
            # One fused kernel instead of ~10 ops per tensor: 4-9% of an update here.
            fused=torch.device(config.device).type in ("cpu", "cuda"),
        )
        self.generator = torch.Generator(device=config.device)
        self._ddp: torch.nn.Module | None = None
        self._ddp_forwards = 0
        self.iteration = 0
        self.tokens_seen = 0
        self.schedule_tokens: int | None = None
        # The linear LR decay runs from (tokens, fraction of config.lr) to 0 at schedule_tokens.
        self.lr_anchor: tuple[int, float] = (0, 1.0)
        self.history: list[dict[str, float]] = []
        self.interrupted: str | None = None  # the signal that stopped the last learn()
        self._stop_signal: str | None = None
        self._writer: Any = None
        self._purge_step: int | None = None  # TensorBoard steps after a resumed checkpoint

    # ------------------------------------------------------------------ hooks

    def _configure_env_kwargs(self) -> None:
        """Adjust / check ``config.env_kwargs`` before the env is made."""

    def _build(self, checkpoint: Path | None) -> None:
        """Make extra modules (value heads, value models)."""

    def modules(self) -> dict[str, torch.nn.Module]:
        """Extra trainable modules saved with the agent (beyond the policy)."""
        return {}

    def parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.policy.model.parameters())
        for module in self.modules().values():
            params += list(module.parameters())
        return params

    def _collect(self) -> Rollout:
        return self.policy.rollout(self.generator, seed=self._rank_seed(0))

    def _update(self, rollout: Rollout) -> dict[str, float]:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _iter_seed(self, stream: int) -> int:
        """A seed that depends only on (config.seed, iteration, stream): resumable."""
        seq = np.random.SeedSequence([self.config.seed, self.iteration, stream])
        return int(seq.generate_state(1)[0])

    def _rank_seed(self, stream: int) -> int:
        """:meth:`_iter_seed` with this rank's offset: each rank samples its own episodes."""
        entropy = self.dist.seed_entropy(self.config.seed, self.iteration, stream)
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def _group_prompts(self, group_size: int) -> list[Any]:
        """``num_envs // group_size`` prompts of the env's split, each repeated ``group_size``
        times (drawn from a seed that depends only on the seed and the iteration)."""
        prompts = self.env.prompts
        rng = np.random.default_rng(self._iter_seed(2))
        idx = rng.integers(len(prompts), size=self.config.num_envs // group_size)
        rows = [prompts[int(i)] for i in idx for _ in range(group_size)]
        return rows[self.dist.local_rows(len(rows))]  # this rank's rows of the global batch

    def _minibatches(self) -> list[torch.Tensor]:
        """One epoch's minibatches of row indices into the (global) rollout, shuffled with the
        agent's generator; with N ranks every rank uses rank 0's order and takes its 1/N share
        of each minibatch."""
        B, mb = self.config.num_envs, self.config.minibatch_size
        order = torch.randperm(B, generator=self.generator, device=self.config.device)
        order = self.dist.broadcast(order)
        return [self.dist.shard(order[i : i + mb]) for i in range(0, B, mb)]

    def _minibatch_passes(
        self, mask: torch.Tensor
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The update loop of the on-policy agents: ``config.epochs`` passes over
        :meth:`_minibatches`, yielding each minibatch's ``(rows, mask[rows], share)``; ``share``
        turns a token mean over this rank's rows into its share of the global minibatch's
        (:meth:`Dist.token_share`; 1 in one process)."""
        for _epoch in range(self.config.epochs):
            for rows in self._minibatches():
                m = mask[rows]
                yield rows, m, self.dist.token_share(m)

    def _all_rows(self, fn: Any) -> Any:
        """``fn(rows)`` (a tensor or a tuple of tensors over rows) for every row of the global
        rollout: each rank computes its own rows and the ranks gather the results."""
        with self._autocast():
            out = float32(fn(self.dist.local_rows(self.config.num_envs)))
        if isinstance(out, tuple):
            return tuple(self.dist.gather_cat(x) for x in out)
        return self.dist.gather_cat(out)

    def _old_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """log π_old of every completion token: the log-probs the rollout sampled with (the same
        weights, the same temperature), so no forward is spent on them. Under bfloat16 autocast
        the update's forwards round differently from the float32 sampler, so they are scored
        again the same way (the first ratio is then exactly 1)."""
        if self.config.compute_dtype == "float32":
            return rollout.logprobs
        with torch.no_grad():
            return self._all_rows(lambda rows: self.policy.score(rollout, rows))

    def _forward(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the training forward ``fn(*args, **kwargs)``; with N ranks through
        ``DistributedDataParallel``, so that :meth:`_step`'s backward averages the gradients.
        Under ``compute_dtype`` autocast; floating outputs come back float32."""
        if not self.dist.enabled:
            with self._autocast():
                return float32(fn(*args, **kwargs))
        if self._ddp is None:
            self._ddp = self.dist.wrap({"policy": self.policy.model, **self.modules()})
        self._ddp_forwards += 1
        with self._autocast():
            return float32(self._ddp(fn, *args, **kwargs))

    def _autocast(self) -> Any:
        """The precision context of the policy's forwards (``config.compute_dtype``)."""
        return autocast(self.config.device, self.config.compute_dtype)

    def _step(self, loss: torch.Tensor) -> float:
        """One optimizer step. With N ranks, ``loss`` is this rank's share (the ranks' average
        is the loss of the global minibatch) and its forward went through :meth:`_forward`."""
        if self.dist.enabled and self._ddp_forwards != 1:
            raise RuntimeError(
                f"{type(self).__name__} cannot train on {self.dist.world_size} ranks: each "
                f"gradient step needs exactly one training forward through Agent._forward, so "
                f"that DistributedDataParallel averages the gradients (this step had "
                f"{self._ddp_forwards})"
            )
        self._ddp_forwards = 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return float(norm)

    def _env_metrics(self, rollout: Rollout) -> dict[str, float]:
        """The env's own accounting, the same for every agent: ``env/return`` is RM − β·KL
        (less any missing-EOS penalty) from the final infos, whatever reward the agent trained
        on (GRPO asks the env for RM only and puts β·k3 in its loss; that sum is
        ``env/train_return``)."""
        fin = rollout.final
        m = {
            "env/return": float(np.mean(env_return(fin))),
            "env/train_return": float(rollout.returns.mean()),
            "env/rm_score": float(np.mean(fin["rm_score"])),
            "env/kl": float(np.mean(fin["kl"])),
            "env/kl_coef": float(np.mean(fin["kl_coef"])),
            "env/length": float(rollout.mask.sum(-1).float().mean()),
            "policy/entropy": rollout.entropy,
        }
        if "gold_score" in fin:
            m["env/gold_score"] = float(np.mean(fin["gold_score"]))
        return m

    # ------------------------------------------------------------------ training

    def learn(
        self,
        total_tokens: int,
        *,
        iterations: int | None = None,
        checkpoint: str | os.PathLike | None = None,
    ) -> Agent:
        """Train until the agent has generated ``total_tokens`` tokens in all (counting earlier
        ``learn`` calls and the run a checkpoint was saved from), or for at most ``iterations``
        more iterations. The learning rate decays linearly to 0 at ``total_tokens`` (see
        :meth:`_start_schedule` for a budget changed on resume).

        With ``checkpoint``, the agent is saved there every ``config.save_every`` iterations and
        when ``learn`` ends; SIGINT / SIGTERM then finish the iteration in progress, save, and
        return early with :attr:`interrupted` set to the signal's name (a second signal stops
        at once, leaving the last checkpoint)."""
        if total_tokens < 1:
            raise ValueError(f"total_tokens must be ≥ 1, got {total_tokens}")
        self._start_schedule(total_tokens)
        self.interrupted = None
        bar = progress(
            total_tokens,
            initial=min(self.tokens_seen, total_tokens),
            disable=not self.config.progress or not self.dist.is_main,
            unit="tok",
            desc=self.algo,
        )
        done = 0
        saved_at = self.iteration
        try:
            with self._stop_on_signals(checkpoint is not None):
                while self.tokens_seen < total_tokens and (iterations is None or done < iterations):
                    # The ranks stop together (torchrun signals each of them, not at once).
                    if self.dist.any(self._stop_signal is not None):
                        self._stop_signal = self._stop_signal or "SIGTERM"
                        break
                    before = self.tokens_seen
                    self._iterate()
                    bar.update(min(self.tokens_seen - before, max(total_tokens - bar.n, 0)))
                    bar.set_postfix(self._progress_postfix(self.history[-1]), refresh=False)
                    done += 1
                    every = self.config.save_every
                    if checkpoint is not None and every and self.iteration % every == 0:
                        self.save(checkpoint)
                        saved_at = self.iteration
                if checkpoint is not None and saved_at != self.iteration:
                    self.save(checkpoint)
                self.interrupted = self._stop_signal
        finally:
            self._stop_signal = None
            bar.close()
            if self._writer:
                self._writer.flush()
        return self

    def _progress_postfix(self, row: dict[str, Any]) -> dict[str, str]:
        """What the progress bar shows after an iteration whose metrics row is ``row``."""
        return {"ret": f"{row['env/return']:.3f}", "kl": f"{row['env/kl']:.2f}"}

    def _apply_lr(self) -> float:
        """Set the optimizer to :meth:`current_lr` (the iteration about to run); return it."""
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _end_iteration(
        self, metrics: dict[str, Any], n_tokens: int, lr: float, tail: dict[str, float]
    ) -> None:
        """Count an iteration that trained on ``n_tokens`` tokens at ``lr`` and log its row:
        ``metrics``, the counters, ``tail`` (timings) and, with several ranks,
        ``dist/world_size`` (in that order, the order of the metrics.jsonl keys)."""
        self.iteration += 1
        self.tokens_seen += n_tokens
        metrics.update({"iteration": self.iteration, "tokens": self.tokens_seen, "lr": lr})
        metrics.update(tail)
        if self.dist.enabled:
            metrics["dist/world_size"] = self.dist.world_size
        self._log(metrics)

    def _iterate(self) -> None:
        """One iteration: rollout, update, counters, a metrics row."""
        lr = self._apply_lr()
        t0 = time.perf_counter()
        self.generator.manual_seed(self._rank_seed(1))
        beta = self.env.kl_coef
        # Every rank holds the global batch; β has seen all of its episodes.
        with self._autocast():
            rollout = self.dist.gather_rollout(self._collect())
        self.env.kl_coef = self.dist.combine_kl_coef(beta, self.env.kl_coef)
        t1 = time.perf_counter()
        metrics = self._env_metrics(rollout)
        metrics.update(self.dist.mean_metrics(self._update(rollout)))
        t2 = time.perf_counter()
        timing = {
            "time/rollout_s": t1 - t0,
            "time/update_s": t2 - t1,
            "time/tokens_per_s": rollout.num_tokens / (t2 - t0),
        }
        self._end_iteration(metrics, rollout.num_tokens, lr, timing)

    # ------------------------------------------------------------------ LR schedule

    def _start_schedule(self, total_tokens: int) -> None:
        """Fix the LR schedule of a ``learn(total_tokens)`` call.

        The rate decays linearly from the anchor ``(tokens, fraction of config.lr)`` to 0 at
        ``total_tokens``; a fresh agent's anchor is ``(0, 1)``. When a later call (or a resumed
        run) asks for a different budget, the anchor moves to the current point at the rate
        reached so far: the rate then decays from there to 0 at the new budget. It never goes
        back up, so extending a run continues the decay more slowly instead of restarting it. A
        run whose rate has reached 0 stays at 0; loading it with a new ``lr`` override starts a
        new decay from that rate at the current point.
        """
        total = int(total_tokens)
        if self.schedule_tokens is not None and total != self.schedule_tokens:
            frac = self._lr_fraction(self.tokens_seen)
            if frac <= 0 and self.config.anneal_lr:
                warnings.warn(
                    f"the learning rate already decayed to 0 at {self.schedule_tokens} tokens; "
                    f"training on to {total} tokens runs at lr 0 (load with a new lr to go on)",
                    stacklevel=3,
                )
            self.lr_anchor = (self.tokens_seen, frac)
        self.schedule_tokens = total

    def _lr_fraction(self, tokens: int) -> float:
        if not self.config.anneal_lr or self.schedule_tokens is None:
            return 1.0
        start, frac = self.lr_anchor
        span = self.schedule_tokens - start
        if span <= 0:
            return 0.0
        return float(min(frac, max(0.0, frac * (self.schedule_tokens - tokens) / span)))

    def current_lr(self) -> float:
        """The learning rate of the next iteration under the current schedule."""
        return self.config.lr * self._lr_fraction(self.tokens_seen)

    # ------------------------------------------------------------------ signals

    @contextmanager
    def _stop_on_signals(self, enabled: bool) -> Iterator[None]:
        """While ``enabled`` (and in the main thread): the first SIGINT / SIGTERM asks the loop
        to stop after the iteration in progress; a second one raises KeyboardInterrupt."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        self._stop_signal = None

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name
            if self.config.progress:
                print(
                    f"\n{self._stop_signal}: stopping after this iteration and saving "
                    "(send it again to stop at once)",
                    flush=True,
                )

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # ------------------------------------------------------------------ logging

    def _check_fresh_log_dir(self) -> None:
        """A new agent never appends to another run's metrics."""
        if self.config.log_dir is None:
            return
        metrics = Path(self.config.log_dir) / "metrics.jsonl"
        if metrics.is_file() and metrics.stat().st_size > 0:
            raise FileExistsError(
                f"{metrics} already holds another run's metrics; pass a new log_dir, resume "
                "that run with load(), or remove the file"
            )

    def _truncate_log(self) -> None:
        """Resume: drop the metrics rows of iterations after the checkpoint (they are redone),
        and torn lines; TensorBoard events after the checkpoint are purged when it reopens."""
        if self.config.log_dir is None or not self.dist.is_main:
            return
        path = Path(self.config.log_dir) / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("iteration", 0) <= self.iteration:
                kept.append(line + "\n")
        atomic_write_lines(path, kept)

    def _log(self, metrics: dict[str, float]) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        self.history.append(metrics)
        if self.config.log_dir is None or not self.dist.is_main:
            return
        log_dir = Path(self.config.log_dir)
        append_line(log_dir / "metrics.jsonl", json.dumps(metrics))
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._writer = False
            else:
                # Events logged after the checkpoint by an interrupted run are purged.
                self._writer = SummaryWriter(str(log_dir), purge_step=self._purge_step)
                self._writer.add_text("config", json.dumps(self.config.to_dict(), indent=1))
        if self._writer:
            step = int(metrics["tokens"])
            for key, value in metrics.items():
                if key not in ("iteration", "tokens"):
                    self._writer.add_scalar(key, value, step)

    def evaluate(self, iterations: int = 1, seed: int = 12345) -> dict[str, float]:
        """Mean env metrics of ``iterations`` rollout batches (no training, own seeds).

        With N ranks every rank must call it: each plays its share of the episodes (seeds with
        a rank offset) and all get the metrics of the whole batch."""
        gen = torch.Generator(device=self.config.device)
        out: list[dict[str, float]] = []
        beta = self.env.kl_coef
        offset = 1_000_003 * self.dist.rank
        try:
            for i in range(iterations):
                gen.manual_seed(seed + i + offset)
                with self._autocast():
                    rollout = self.policy.rollout(gen, seed=seed + 1000 * i + offset)
                out.append(self._env_metrics(self.dist.gather_rollout(rollout)))
        finally:  # evaluation episodes must not move an adaptive β
            self.env.kl_coef = beta
        return {k: float(np.mean([m[k] for m in out])) for k in out[0]}

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike) -> Path:
        """Save atomically to ``path``: ``policy/`` (HF folder: weights + tokenizer), extra
        modules, optimizer and RNG states (``state.safetensors``), counters, LR schedule, β and
        history (``agent.json``) and the config (``config.json``). Nothing is pickled. ``path``
        must be new, empty or an earlier checkpoint (never an unrelated folder).

        With N ranks every rank calls it; rank 0 writes (the state is the same on all ranks and
        does not depend on N) and the others wait until the folder is complete."""
        if not self.dist.is_main:
            self.dist.barrier()
            return Path(path)

        def write(tmp: Path) -> None:
            self.policy.model.save_pretrained(tmp / "policy")
            self.policy.tokenizer.save_pretrained(tmp / "policy")
            self._save_extra(tmp)
            tensors: dict[str, torch.Tensor] = {}
            state = {
                "format": CHECKPOINT_FORMAT,
                "algo": self.algo,
                "iteration": self.iteration,
                "tokens_seen": self.tokens_seen,
                "schedule_tokens": self.schedule_tokens,
                "lr_anchor": list(self.lr_anchor),
                "kl_coef": float(self.env.kl_coef),  # adaptive controllers carry state
                "optimizer": _pack(self.optimizer.state_dict(), tensors, "optimizer"),
                "modules": {
                    k: _pack(m.state_dict(), tensors, f"modules.{k}")
                    for k, m in self.modules().items()
                },
                "generator": _pack(self.generator.get_state(), tensors, "generator"),
                "history": self.history,
            }
            save_file(tensors, str(tmp / TENSORS_NAME))
            atomic_write_json(tmp / "config.json", self.config.to_dict())
            atomic_write_json(tmp / STATE_NAME, state, indent=None)

        saved = atomic_write_dir(path, write, replaces=CHECKPOINT_MARKERS)
        self.dist.barrier()
        return saved

    def _save_extra(self, folder: Path) -> None:
        """Extra HF folders (a separate value model)."""

    @classmethod
    def load(cls, path: str | os.PathLike, *, trust_specs: bool = False, **overrides: Any) -> Agent:
        """Rebuild an agent from :meth:`save`'s folder; ``overrides`` replace config fields
        (e.g. ``log_dir``, ``device``, ``progress``, ``env_kwargs``). Training resumes where it
        stopped, and the rows of ``log_dir/metrics.jsonl`` after the checkpoint are dropped.

        Loading reads JSON and safetensors only. A ``"module:function"`` spec in the saved
        config (``env_kwargs`` reward / prompts / gold, or a ``module:`` env id) would import
        code, so it is refused unless ``trust_specs=True`` or the field is passed again as an
        override; the package's own ``textenv.tasks`` specs are allowed. The saved ``log_dir``
        is used only with ``trust_specs=True`` (a file must not choose where to write): pass
        ``log_dir=`` to log a resumed run.
        """
        path = _resolve_checkpoint(path)
        raw = json.loads((path / "config.json").read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path / 'config.json'} does not hold a config object")
        names = {f.name for f in fields(cls.config_class)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown config fields for {cls.__name__}: {sorted(unknown)}")
        saved = {k: v for k, v in raw.items() if k in names}
        specs = _saved_specs(saved, overrides)
        if specs and not trust_specs:
            raise UntrustedSpecError(
                f"{path / 'config.json'} names code to import: {', '.join(specs)}. A loaded "
                "checkpoint does not import code on its own: pass trust_specs=True (textenv "
                "train --resume --trust-specs) if you trust this checkpoint, or pass the field "
                "again yourself (e.g. env_kwargs=...)"
            )
        if "log_dir" not in overrides and not trust_specs:
            if saved.get("log_dir") is not None:
                warnings.warn(
                    f"not logging to the saved log_dir {saved['log_dir']!r} (a loaded file does "
                    "not choose where to write): pass log_dir= (or trust_specs=True) to log",
                    stacklevel=2,
                )
            saved["log_dir"] = None
        config = cls.config_class(**{**saved, **overrides})
        state = _read_state(path)
        if state.get("algo") != cls.algo:
            raise ValueError(f"{path} holds a {state.get('algo')!r} agent, not {cls.algo!r}")
        agent = cls(config, _checkpoint=path)
        for name, module in agent.modules().items():
            module.load_state_dict(state["modules"][name])
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.generator.set_state(state["generator"])
        agent.iteration = int(state["iteration"])
        agent.tokens_seen = int(state["tokens_seen"])
        agent.schedule_tokens = state["schedule_tokens"]
        anchor = state.get("lr_anchor", (0, 1.0))
        agent.lr_anchor = (int(anchor[0]), float(anchor[1]))
        if "lr" in overrides and overrides["lr"] != saved.get("lr"):
            # A new learning rate starts a new decay from here (to 0 at the next budget).
            agent.lr_anchor, agent.schedule_tokens = (agent.tokens_seen, 1.0), None
        agent.history = list(state["history"])
        agent.env.kl_coef = float(state["kl_coef"])  # an adaptive β is state
        agent._purge_step = agent.tokens_seen + 1
        agent._truncate_log()
        return agent

    def close(self) -> None:
        self.envs.close()
        if self._writer:
            self._writer.close()
        # DDP's reducer must go before the process group: freed last, it would tear the group
        # down holding the GIL while a gloo thread needs it (a hang at exit).
        self._ddp = None
