"""Data-parallel training on ``torch.distributed``: N ranks, one shard of the batch each.

Launch with ``torchrun --nproc_per_node N -m agents --algo grpo ...`` (or ``textenv train
--nproc N``, which runs torchrun). Every rank builds the same agent; :class:`Dist` is the one
object the agent consults about the others:

* **Shards.** ``config.num_envs`` (B) and ``config.minibatch_size`` stay *global*; each rank steps
  its own vector env of B/N rows, with its own seeds (sampling and env resets get a rank offset).
* **One global batch.** After each rollout the ranks all-gather it (token ids, masks, rewards,
  log-probs, final infos: small next to the model work), so every statistic over the batch
  (GAE, advantage whitening, group / batch std, leave-one-out baselines, metrics) is computed on
  all B rows, identically on every rank. A no-grad forward over the batch (old values, old
  log-probs) runs on each rank's own rows and is gathered (``Agent._all_rows``), so it is not
  repeated N times.
* **Split minibatches.** Every rank uses rank 0's permutation of the B rows and takes 1/N of each
  global minibatch. A loss is written as this rank's *share*: the average of the shares over the
  ranks is the loss of the whole minibatch (token means are weighted by the all-reduced token
  count, see :meth:`Dist.token_share`; a mean over rows needs nothing, every rank has as many).
  The training forward goes through ``Agent._forward``, so ``DistributedDataParallel`` averages
  the gradients: N ranks × B/N rows take the same step as one process × B rows. DPO shards its
  minibatches of pairs the same way, and spreads the scoring of its reference cache over the
  ranks.
* **Adaptive β.** Each rank's env moves its KL controller on its own episodes; after the rollout
  the ranks combine the multiplicative steps (:meth:`Dist.combine_kl_coef`), so β sees every
  episode of the batch.
* **Rank 0** logs, shows progress and writes checkpoints; a checkpoint is the same whatever N was,
  so a run resumes with any N. Evaluation spreads its episodes over the ranks (every rank calls
  it) and returns the metrics of all of them.
* **Failures.** The process group has a timeout (``TEXTENV_DIST_TIMEOUT`` seconds, default 600),
  and torchrun stops every rank when one exits with an error (``python -m agents`` is decorated with
  ``record``, so torchrun prints the failing rank's traceback).

Backends: gloo when the policy is on the CPU, NCCL on CUDA (one GPU per rank: ``"cuda"`` means
``cuda:LOCAL_RANK``). The module also holds the precision helpers of the GPU path
(:func:`autocast`, :func:`float32`: ``AgentConfig.compute_dtype``).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import inspect
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from agents.policy import Rollout

__all__ = [
    "Dist",
    "LOCAL",
    "init_distributed",
    "launch",
    "shutdown",
    "to_argv",
    "COMPUTE_DTYPES",
    "autocast",
    "float32",
    "backend_for",
    "TIMEOUT_ENV",
    "DEFAULT_TIMEOUT_S",
]

TIMEOUT_ENV = "TEXTENV_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA policies, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


COMPUTE_DTYPES = ("float32", "bfloat16")


def autocast(device: str | torch.device, dtype: str) -> Any:
    """``torch.autocast`` to ``dtype`` on ``device``'s type (CPU or CUDA); a no-op context for
    ``"float32"``. Mixed precision: weights and gradients stay float32."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
    enabled = dtype != "float32"
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def float32(out: Any) -> Any:
    """Floating tensors (alone or in a tuple) cast to float32 (differentiably): the losses and
    batch statistics never run in bfloat16."""
    if isinstance(out, tuple):
        return tuple(float32(x) for x in out)
    if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dtype != torch.float32:
        return out.float()
    return out


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "cpu", timeout_s: float | None = None) -> Dist:
    """Join the process group that torchrun describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` / ``MASTER_PORT`` environment variables); a no-op :data:`LOCAL` when the
    process was not launched by torchrun. Idempotent.

    ``timeout_s`` bounds every collective (default: ``TEXTENV_DIST_TIMEOUT`` or 600 s): a rank
    that stops answering fails the others with an error instead of leaving them waiting.
    """
    if tdist.is_available() and tdist.is_initialized():
        return Dist.from_group()
    if _env_world_size() <= 1:
        return LOCAL
    if not tdist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if timeout_s is None:
        timeout_s = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    if not timeout_s > 0:
        raise ValueError(f"the process-group timeout must be > 0 s, got {timeout_s}")
    backend = backend_for(device)
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} but CUDA is not available on this rank")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    atexit.register(shutdown)
    return Dist.from_group()


def shutdown() -> None:
    """Leave the process group (idempotent; also run at exit for a group joined here).

    Close the agents first (:meth:`agents.base.Agent.close` drops its DDP wrapper): a group
    whose last reference goes with a DDP reducer is torn down holding the GIL, which can hang."""
    if tdist.is_available() and tdist.is_initialized():
        gc.collect()  # free DDP reducers that are no longer referenced, while the group lives
        tdist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str], module: str = "agents") -> int:
    """Run ``python -m <module> <argv>`` as ``nproc`` ranks on this machine under torchrun
    (``torch.distributed.run --standalone``: a free rendezvous port, and one failing rank stops
    the others); returns torchrun's exit status. Ranks other than 0 print to torchrun's log
    folder, not the console (their errors still reach the console)."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}"]
    if nproc > 1:
        cmd += ["--redirects", ",".join(f"{r}:1" for r in range(1, nproc))]
    cmd += ["-m", module, *argv]
    return subprocess.call(cmd)


def to_argv(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    exclude: tuple[str, ...] = (),
) -> list[str]:
    """``args`` back as command-line arguments of ``parser``: every option whose value differs
    from its default, so a rank launched with them parses the same namespace (what
    ``textenv train --nproc N`` hands to torchrun). ``exclude``: dests to leave out."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", *exclude):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(action.option_strings[0 if value else 1])
        elif action.nargs == 0:  # store_true / store_false / store_const
            argv.append(action.option_strings[0])
        elif isinstance(value, list | tuple):
            argv += [action.option_strings[0], *map(str, value)]
        else:
            argv += [action.option_strings[0], str(value)]
    return argv


class _Closure(torch.nn.Module):
    """Holds the trainable modules so that DDP sees their parameters; its forward runs a
    function, so the agent's training forward (any number of modules, any call path) goes
    through ``DistributedDataParallel.forward`` and its gradients are averaged."""

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleDict(modules)

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


class Dist:
    """This rank's place in the job and the few collectives the agents need.

    With ``world_size == 1`` (:data:`LOCAL`) every method is the identity / a no-op, so the
    agents' code is the same in one process and in N.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.local_rank = int(local_rank)

    @classmethod
    def from_group(cls) -> Dist:
        """The default process group (already initialised)."""
        return cls(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @classmethod
    def setup(cls, device: str = "cpu") -> Dist:
        """The agent's view: the initialised process group; under torchrun without one, join
        it (:func:`init_distributed`); otherwise one process."""
        return init_distributed(device)

    def __repr__(self) -> str:
        return f"Dist(rank={self.rank}, world_size={self.world_size})"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, evaluates out loud and saves."""
        return self.rank == 0

    # ------------------------------------------------------------------ placement

    def device(self, device: str) -> str:
        """One GPU per rank: ``"cuda"`` (or any ``"cuda:k"``) → ``cuda:LOCAL_RANK``."""
        if self.enabled and torch.device(device).type == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def shard_size(self, n: int, name: str) -> int:
        """``n / world_size``; a clear error when the ranks cannot split ``n`` evenly."""
        if n % self.world_size:
            raise ValueError(
                f"{name}={n} is not divisible by the number of ranks ({self.world_size}): "
                f"every rank takes an equal share"
            )
        return n // self.world_size

    def local_rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` rows (rank order, contiguous)."""
        size = self.shard_size(n, "batch")
        return slice(self.rank * size, (self.rank + 1) * size)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's share (1/N, contiguous) of a global minibatch's row indices."""
        return rows[self.local_rows(len(rows))]

    def seed_entropy(self, *parts: int) -> list[int]:
        """Seed entropy with this rank's offset (rank 0 keeps ``parts``, so one process draws
        exactly what it drew before the ranks existed)."""
        return [*parts, self.rank] if self.rank else list(parts)

    # ------------------------------------------------------------------ collectives

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (a new tensor; no gradient flows through it)."""
        if not self.enabled:
            return x
        out = x.detach().clone()
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        return out

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``x`` on every rank (same shape and dtype everywhere)."""
        if not self.enabled:
            return x
        out = x.contiguous().clone()
        tdist.broadcast(out, src=0)
        return out

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (so that all ranks take the same branch)."""
        if not self.enabled:
            return bool(flag)
        x = self._to_backend(torch.tensor([1.0 if flag else 0.0]))
        tdist.all_reduce(x, op=tdist.ReduceOp.MAX)
        return bool(x.item() > 0)

    def token_share(self, mask: torch.Tensor) -> torch.Tensor:
        """``N · t / T``: ``t`` this rank's masked tokens, ``T`` all ranks' (one all-reduce).

        A masked mean over this rank's rows times this factor is the rank's *share* of the mean
        over the global minibatch's tokens: the shares average (as DDP averages gradients) to
        the global token mean. In one process the factor is exactly 1."""
        local = mask.sum().to(torch.float32).clamp_min(1.0)
        if not self.enabled:
            return local / local
        return local * self.world_size / self.all_reduce_sum(local)

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Average every metric over ranks (one all-reduce). Shares (:meth:`token_share`, means
        over equal row shares) become global values; values already equal stay as they are."""
        if not self.enabled or not metrics:
            return metrics
        keys = sorted(metrics)
        vec = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
        vec = self._to_backend(vec)
        tdist.all_reduce(vec, op=tdist.ReduceOp.SUM)
        vec = (vec / self.world_size).cpu()
        return {k: float(v) for k, v in zip(keys, vec.tolist())}

    def gather_cat(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``x`` along dim 0, in rank order (equal shapes)."""
        if not self.enabled:
            return x
        dtype = x.dtype
        send = x.detach().contiguous()
        if dtype == torch.bool:  # not every backend gathers bool
            send = send.to(torch.uint8)
        parts = [torch.empty_like(send) for _ in range(self.world_size)]
        tdist.all_gather(parts, send)
        return torch.cat(parts).to(dtype)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def gather_rollout(self, rollout: Rollout) -> Rollout:
        """The global batch: every rank's rollout, rows in rank order, on every rank.

        Tensors are concatenated, numpy arrays and lists too, ``final`` key by key (NaN where a
        rank lacks a key); a float field (``entropy``) is a per-token mean, so it is weighted by
        each rank's token count."""
        if not self.enabled:
            return rollout
        updates: dict[str, Any] = {}
        rest: dict[str, Any] = {"__tokens__": rollout.num_tokens, "__rows__": rollout.batch_size}
        for f in fields(rollout):
            value = getattr(rollout, f.name)
            if isinstance(value, torch.Tensor):
                updates[f.name] = self.gather_cat(value)
            else:
                rest[f.name] = value
        parts = self.gather_objects(rest)
        weights = np.array([p["__tokens__"] for p in parts], dtype=np.float64)
        for name, value in rest.items():
            if name.startswith("__"):
                continue
            values = [p[name] for p in parts]
            if isinstance(value, np.ndarray):
                updates[name] = np.concatenate(values)
            elif isinstance(value, list):
                updates[name] = [x for v in values for x in v]
            elif isinstance(value, dict):
                updates[name] = _concat_final(values, [p["__rows__"] for p in parts])
            elif isinstance(value, float | int):
                updates[name] = float(np.dot(values, weights) / max(weights.sum(), 1.0))
            else:
                raise TypeError(f"cannot gather Rollout.{name} of type {type(value).__name__}")
        return replace(rollout, **updates)

    def combine_kl_coef(self, before: float, after: float) -> float:
        """β after a rollout of every rank: each rank's controller moved β from ``before`` by a
        product of proportional steps on its own episodes; the product of all ranks' steps is
        what one process gets from all episodes (exactly for a fixed β, to first order in
        ``episodes / horizon`` for an adaptive one)."""
        if not self.enabled or before == 0.0:
            return after
        ratios = self.gather_objects(float(after) / float(before))
        return float(before * np.prod(ratios))

    # ------------------------------------------------------------------ DDP

    def wrap(self, modules: dict[str, torch.nn.Module]) -> torch.nn.Module:
        """The trainable modules inside ``DistributedDataParallel`` (call the result with
        ``(fn, *args)`` to run ``fn`` as the training forward; gradients are averaged)."""
        if not self.enabled:
            raise RuntimeError("DDP wrapping needs a process group (world_size > 1)")
        ddp = torch.nn.parallel.DistributedDataParallel
        # Buffers are constants (attention masks): no per-forward sync (the keyword was renamed).
        params = inspect.signature(ddp.__init__).parameters
        no_sync = (
            "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
        )
        return ddp(
            _Closure(modules),
            device_ids=None,  # the inputs are already on the module's device
            gradient_as_bucket_view=True,
            **{no_sync: False},
        )

    def _to_backend(self, x: torch.Tensor) -> torch.Tensor:
        if tdist.get_backend() == "nccl":
            return x.to(f"cuda:{torch.cuda.current_device()}")
        return x


def _concat_final(dicts: Sequence[dict[str, np.ndarray]], rows: Sequence[int]) -> dict:
    keys = sorted({k for d in dicts for k in d})
    return {
        k: np.concatenate(
            [np.asarray(d[k]) if k in d else np.full(n, np.nan) for d, n in zip(dicts, rows)]
        )
        for k in keys
    }


LOCAL = Dist()
"""One process: every collective is the identity."""
