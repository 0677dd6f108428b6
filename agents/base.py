"""What every agent shares: the config fields, the training loop, logging, save / load / resume.

An algorithm subclasses :class:`Agent` and writes two methods: ``_collect`` (one rollout batch
through :class:`~agents.policy.LMPolicy`) and ``_update`` (the gradient steps; returns metrics).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from agents.distributed import Dist
from agents.policy import LMPolicy, Rollout, make_envs
from textenv.files import atomic_write_dir, resolve_dir

__all__ = ["AgentConfig", "Agent", "env_return"]


@dataclass
class AgentConfig:
    """Fields every agent has.

    Attributes:
        env_id: a registered id (``"textenv/Sort-v0"``, ``"textenv/Tiny-v0"``, ...).
        env_kwargs: JSON-serialisable env kwargs (``kl_coef``, ``kl_reward``, ``reward``, ...).
        model: the policy's initial weights, a :func:`textenv.models.load_causal_lm` spec;
            ``None`` = the env's reference LM (the usual RLHF start).
        num_envs: episodes per rollout batch (rows of the lockstep vector env).
        lr: Adam learning rate (decayed linearly to 0 over ``learn``'s ``total_tokens`` when
            ``anneal_lr``).
        epochs: passes over each rollout batch.
        minibatch_size: episodes per gradient step; must divide ``num_envs``.
        max_grad_norm: gradient-norm clip.
        seed: seeds sampling (a ``torch.Generator``), env resets and minibatch order.
        device: torch device of the policy (the env's models follow ``env_kwargs["device"]``).
        temperature: sampling temperature; ``None`` = the env's ``temperature`` (they must
            agree: the env scores the reference at its own temperature).
        log_dir: where ``metrics.jsonl`` and TensorBoard events go (``None``: no files).
        progress: show a tqdm progress bar in ``learn``.
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

    def validate(self) -> None:
        if not isinstance(self.num_envs, int) or self.num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {self.num_envs!r}")
        if not isinstance(self.minibatch_size, int) or self.minibatch_size < 1:
            raise ValueError(
                f"minibatch_size must be a positive integer, got {self.minibatch_size}"
            )
        if self.num_envs % self.minibatch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} does not divide the batch "
                f"(num_envs={self.num_envs})"
            )
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (np.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be a finite number ≥ 0, got {self.lr}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        json.dumps(self.env_kwargs)  # configs are saved with checkpoints

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


def _resolve_checkpoint(path: str | os.PathLike) -> Path:
    return resolve_dir(path, "agent.pt")


class Agent:
    """Base class: builds envs + policy, runs ``learn``, logs, saves and loads."""

    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    algo: ClassVar[str] = "base"

    def __init__(self, config: AgentConfig | None = None, *, _checkpoint: Path | None = None):
        config = replace(config) if config is not None else self.config_class()
        self.config = config  # a copy: the agent may adjust env_kwargs
        config.validate()
        self._configure_env_kwargs()
        # Data-parallel ranks (agents.distributed): num_envs / minibatch_size stay global, each
        # rank steps num_envs / N rows of its own; one process is world_size 1.
        self.dist = Dist.setup(config.device)
        config.device = self.dist.device(config.device)
        if "device" in config.env_kwargs:
            config.env_kwargs["device"] = self.dist.device(config.env_kwargs["device"])
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
        )
        self.generator = torch.Generator(device=config.device)
        self._ddp: torch.nn.Module | None = None
        self._ddp_forwards = 0
        self.iteration = 0
        self.tokens_seen = 0
        self.schedule_tokens: int | None = None
        self.history: list[dict[str, float]] = []
        self._writer: Any = None

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

    def _all_rows(self, fn: Any) -> Any:
        """``fn(rows)`` (a tensor or a tuple of tensors over rows) for every row of the global
        rollout: each rank computes its own rows and the ranks gather the results."""
        out = fn(self.dist.local_rows(self.config.num_envs))
        if isinstance(out, tuple):
            return tuple(self.dist.gather_cat(x) for x in out)
        return self.dist.gather_cat(out)

    def _forward(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the training forward ``fn(*args, **kwargs)``; with N ranks through
        ``DistributedDataParallel``, so that :meth:`_step`'s backward averages the gradients."""
        if not self.dist.enabled:
            return fn(*args, **kwargs)
        if self._ddp is None:
            self._ddp = self.dist.wrap({"policy": self.policy.model, **self.modules()})
        self._ddp_forwards += 1
        return self._ddp(fn, *args, **kwargs)

    def _step(self, loss: torch.Tensor) -> float:
        """One optimizer step. With N ranks, ``loss`` is this rank's share (the ranks' average
        is the loss of the global minibatch) and its forward went through :meth:`_forward`."""
        if self.dist.enabled and self._ddp_forwards != 1:
            raise RuntimeError(
                f"{type(self).__name__}: with {self.dist.world_size} ranks each gradient step "
                f"needs exactly one training forward through Agent._forward (got "
                f"{self._ddp_forwards}), or the ranks' gradients would not be averaged"
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

    def learn(self, total_tokens: int, *, iterations: int | None = None) -> Agent:
        """Train until the agent has generated ``total_tokens`` tokens in all (counting earlier
        ``learn`` calls and the run a checkpoint was saved from), or for at most ``iterations``
        more iterations. The learning rate decays linearly to 0 at ``total_tokens``."""
        from tqdm.auto import tqdm

        if total_tokens < 1:
            raise ValueError(f"total_tokens must be ≥ 1, got {total_tokens}")
        self.schedule_tokens = int(total_tokens)
        bar = tqdm(
            total=total_tokens,
            initial=min(self.tokens_seen, total_tokens),
            disable=not self.config.progress or not self.dist.is_main,
            unit="tok",
            desc=self.algo,
        )
        done = 0
        try:
            while self.tokens_seen < total_tokens and (iterations is None or done < iterations):
                frac = 1.0 - self.tokens_seen / total_tokens if self.config.anneal_lr else 1.0
                lr = self.config.lr * frac
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                t0 = time.perf_counter()
                self.generator.manual_seed(self._rank_seed(1))
                beta = self.env.kl_coef
                # Every rank holds the global batch; β has seen all of its episodes.
                rollout = self.dist.gather_rollout(self._collect())
                self.env.kl_coef = self.dist.combine_kl_coef(beta, self.env.kl_coef)
                t1 = time.perf_counter()
                metrics = self._env_metrics(rollout)
                metrics.update(self.dist.mean_metrics(self._update(rollout)))
                t2 = time.perf_counter()
                self.iteration += 1
                self.tokens_seen += rollout.num_tokens
                metrics.update(
                    {
                        "iteration": self.iteration,
                        "tokens": self.tokens_seen,
                        "lr": lr,
                        "time/rollout_s": t1 - t0,
                        "time/update_s": t2 - t1,
                        "time/tokens_per_s": rollout.num_tokens / (t2 - t0),
                    }
                )
                self._log(metrics)
                bar.update(min(rollout.num_tokens, max(total_tokens - bar.n, 0)))
                bar.set_postfix(
                    ret=f"{metrics['env/return']:.3f}", kl=f"{metrics['env/kl']:.2f}", refresh=False
                )
                done += 1
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        return self

    def _log(self, metrics: dict[str, float]) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        self.history.append(metrics)
        if self.config.log_dir is None or not self.dist.is_main:
            return
        log_dir = Path(self.config.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._writer = False
            else:
                self._writer = SummaryWriter(str(log_dir))
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
                rollout = self.policy.rollout(gen, seed=seed + 1000 * i + offset)
                out.append(self._env_metrics(self.dist.gather_rollout(rollout)))
        finally:  # evaluation episodes must not move an adaptive β
            self.env.kl_coef = beta
        return {k: float(np.mean([m[k] for m in out])) for k in out[0]}

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike) -> Path:
        """Save atomically to ``path``: ``policy/`` (HF folder: weights + tokenizer), extra
        modules, optimizer, RNG states, counters and config (``config.json``).

        With N ranks every rank calls it; rank 0 writes (the state is the same on all ranks and
        does not depend on N) and the others wait until the folder is complete."""
        if not self.dist.is_main:
            self.dist.barrier()
            return Path(path)

        def write(tmp: Path) -> None:
            self.policy.model.save_pretrained(tmp / "policy")
            self.policy.tokenizer.save_pretrained(tmp / "policy")
            self._save_extra(tmp)
            state = {
                "algo": self.algo,
                "iteration": self.iteration,
                "tokens_seen": self.tokens_seen,
                "schedule_tokens": self.schedule_tokens,
                "optimizer": self.optimizer.state_dict(),
                "modules": {k: m.state_dict() for k, m in self.modules().items()},
                "generator": self.generator.get_state(),
                "kl_coef": float(self.env.kl_coef),  # adaptive controllers carry state
                "history": self.history,
            }
            torch.save(state, tmp / "agent.pt")
            (tmp / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))

        saved = atomic_write_dir(path, write)
        self.dist.barrier()
        return saved

    def _save_extra(self, folder: Path) -> None:
        """Extra HF folders (a separate value model)."""

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> Agent:
        """Rebuild an agent from :meth:`save`'s folder; ``overrides`` replace config fields
        (e.g. ``log_dir``, ``device``, ``progress``). Training resumes where it stopped."""
        path = _resolve_checkpoint(path)
        raw = json.loads((path / "config.json").read_text())
        names = {f.name for f in fields(cls.config_class)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown config fields for {cls.__name__}: {sorted(unknown)}")
        config = cls.config_class(**{**{k: v for k, v in raw.items() if k in names}, **overrides})
        state = torch.load(path / "agent.pt", map_location=config.device, weights_only=False)
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
        agent.history = list(state["history"])
        agent.env.kl_coef = float(state["kl_coef"])  # an adaptive β is state
        return agent

    def close(self) -> None:
        self.envs.close()
        if self._writer:
            self._writer.close()
