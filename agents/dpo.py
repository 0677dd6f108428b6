"""DPO (Rafailov et al. 2023), IPO (Azar et al. 2023) and label smoothing (cDPO): preference
optimisation without a reward model, on the same preference files and the same env.

The policy is trained offline on preference pairs (TRL-format ``{"prompt", "chosen",
"rejected"}`` rows, or K-way rankings expanded into their C(K, 2) pairs, read with
:func:`textenv.preferences.read_preferences`), against a frozen **reference**: the env's
reference LM, the same ρ that the env's KL and every RL agent are measured against. With
``π_c, π_r`` the policy's and ``ρ_c, ρ_r`` the reference's log-probs of the chosen and rejected
completions, and ``h = (π_c − ρ_c) − (π_r − ρ_r)`` their log-ratio difference:

* ``loss_type="sigmoid"`` (DPO): ``L(h) = −log σ(β·h)``, with log-probs summed over tokens;
* ``loss_type="ipo"`` (IPO): ``L(h) = (h − 1/(2β))²``, with log-probs **averaged** over each
  completion's tokens (as in the IPO paper and TRL);
* ``label_smoothing=ε`` (conservative DPO, for labels flipped with probability ε):
  ``(1 − ε)·L(h) + ε·L(−h)``, for either loss.

The implicit reward of a completion is ``β·(π − ρ)`` (in the loss's log-prob convention);
``dpo/accuracy`` is the fraction of pairs whose chosen completion gets the higher implicit
reward, ties counting ½ — so a policy equal to its reference scores exactly chance, 0.5.

**Encoding** (as the env encodes episodes): the prompt by the env's own
:class:`~textenv.env.prompts.PromptEncoder` (no special tokens except a BOS the tokenizer adds by
itself, left-truncated to ``max_prompt_tokens``, an empty prompt becomes one EOS), left-padded; the
completion is tokenised without special tokens and right-padded to ``max_new_tokens``. Texts in
preference files carry no EOS (the env and :func:`~textenv.preferences.sample_completions`
decode without special tokens), but an episode only ends before ``max_new_tokens`` by emitting
EOS. So a completion shorter than ``max_new_tokens`` tokens gets **EOS appended** (it ended; the
policy learns to stop there too), and one of ``max_new_tokens`` tokens or more is the env's
truncated episode: cut to ``max_new_tokens``, no EOS (longer texts are counted in
``pairs_truncated`` and warned about). Log-probs come from one teacher-forced forward per
minibatch (:func:`textenv.lm.sampling.sequence_logprobs`, chosen and rejected rows together) at
the env's sampling temperature, exactly as the env scores the reference.

**Training**: the reference's log-probs of every pair are computed once, on first use, and cached
(the reference is frozen, so every pass over the data reuses them). Each iteration takes the next
``batch_size`` pairs of the data stream (a fresh seeded permutation per pass over the data) and
makes ``epochs × batch_size / minibatch_size`` gradient steps on them, with gradient clipping and
the learning rate decayed linearly to 0 over ``learn``'s budget. The budget counts completion
tokens trained on (chosen + rejected, EOS included); ``learn(passes=3)`` asks for three passes over
the data instead. The pair order depends only on the seed and the iteration, so a saved agent
resumes exactly where it stopped (with any number of ranks).

**Data-parallel** (``torchrun`` / ``textenv train --nproc N``, :mod:`agents.distributed`): every
rank reads all the pairs and draws the same batches; each takes 1/N of every minibatch
(``minibatch_size`` stays global and must divide by N), its forward goes through
``DistributedDataParallel``, so N ranks take the same step as one process. The reference's
log-probs are scored 1/N per rank and gathered, so every rank caches the same values. Rank 0
alone evaluates, logs and saves.

**Evaluation** is the RL agents': every ``eval_every`` iterations the policy plays the env on its
held-out prompts (:func:`agents.evaluation.evaluate`) and ``env/rm_score``, ``env/kl``,
``env/return``, ``env/gold_score`` are logged next to ``dpo/loss``, ``dpo/accuracy``,
``dpo/margin``, ``dpo/chosen_reward``, ``dpo/rejected_reward`` (and ``dpo/val_*`` on
``val_data``), in ``metrics.jsonl`` and TensorBoard.

Example::

    from agents import DPO, DPOConfig
    agent = DPO(DPOConfig(env_id="textenv/Sort-v0", data="prefs.jsonl", beta=0.1))
    agent.learn(passes=2)
    agent.save("checkpoints/dpo")
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.base import Agent, AgentConfig
from agents.evaluation import evaluate
from textenv.env.prompts import PromptEncoder
from textenv.files import atomic_write_json
from textenv.lm.models import load_frozen_causal_lm
from textenv.lm.sampling import sequence_logprobs
from textenv.preferences import PreferencePair, read_preferences

__all__ = ["DPOConfig", "DPO", "EncodedPairs", "encode_pairs", "dpo_loss", "LOSS_TYPES"]

LOSS_TYPES = ("sigmoid", "ipo")
EVAL_SEED = 12345  # every in-training evaluation sees the same held-out prompts and draws


@dataclass
class DPOConfig(AgentConfig):
    """DPO settings (on top of :class:`~agents.base.AgentConfig`).

    ``num_envs`` is the batch of the env the policy is evaluated in; ``epochs`` are passes over
    each iteration's batch of pairs; ``minibatch_size`` is pairs per gradient step.

    Attributes:
        data: the training preferences: a pairs or rankings JSONL file (required).
        val_data: held-out preference pairs (same formats) for ``dpo/val_*`` metrics.
        beta: β, the strength of the implicit KL leash (larger: closer to the reference).
        loss_type: ``"sigmoid"`` (DPO) or ``"ipo"`` (IPO).
        label_smoothing: ε in [0, 0.5): the assumed label-flip rate (cDPO).
        batch_size: pairs per iteration; a multiple of ``minibatch_size``.
        eval_every: iterations between evaluations on the env's held-out prompts (and on
            ``val_data``); 0: never during ``learn``.
        eval_prompts: held-out prompts per evaluation.
    """

    data: str | None = None
    val_data: str | None = None
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 64
    minibatch_size: int = 32
    eval_every: int = 10
    eval_prompts: int = 64

    def validate(self) -> None:
        if self.data is None:
            raise ValueError(
                "DPO trains on preference pairs: set data= to a pairs or rankings JSONL file "
                "(what `textenv sample` + `textenv label` or `textenv run` write)"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.minibatch_size, int) or self.minibatch_size < 1:
            raise ValueError(
                f"minibatch_size must be a positive integer, got {self.minibatch_size!r}"
            )
        if self.batch_size % self.minibatch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} does not divide "
                f"batch_size={self.batch_size} (pairs per iteration)"
            )
        # DPO's minibatches split pairs, not env rows: the base check that minibatch_size
        # divides num_envs does not apply, every other base check does.
        probe = copy.copy(self)
        probe.minibatch_size = 1
        AgentConfig.validate(probe)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number ≥ 0, got {self.beta}")
        if self.loss_type == "ipo" and self.beta == 0:
            raise ValueError("the IPO loss targets a margin of 1/(2β): beta must be > 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an integer ≥ 0, got {self.eval_every!r}")
        if not isinstance(self.eval_prompts, int) or self.eval_prompts < 1:
            raise ValueError(f"eval_prompts must be a positive integer, got {self.eval_prompts!r}")


# --------------------------------------------------------------------------- the loss


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses ``(b,)`` and the implicit rewards ``β·(π − ρ)`` of chosen and rejected.

    The log-probs are per completion, already summed (DPO) or averaged (IPO) over its tokens.
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    eps = float(label_smoothing)
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        target = 1.0 / (2.0 * beta)
        losses = (1 - eps) * (h - target) ** 2 + eps * (-h - target) ** 2
    else:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def _accuracy(margins: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 when the chosen completion's implicit reward is higher, ½ on a tie."""
    return (margins > 0).float() + 0.5 * (margins == 0).float()


# --------------------------------------------------------------------------- encoding


@dataclass
class EncodedPairs:
    """Preference pairs as the env would see them as episodes (tensors on one device).

    ``prompt_ids`` ``(D, P)`` left-padded; ``chosen`` / ``rejected`` ``(D, N)`` right-padded
    with their masks; ``truncated``: completions longer than ``N`` tokens that were cut.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    chosen: torch.Tensor
    chosen_mask: torch.Tensor
    rejected: torch.Tensor
    rejected_mask: torch.Tensor
    truncated: int = 0

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])

    def num_tokens(self, idx: torch.Tensor | slice = slice(None)) -> int:
        """Completion tokens (chosen + rejected, EOS included) of the pairs ``idx``."""
        return int(self.chosen_mask[idx].sum() + self.rejected_mask[idx].sum())


def encode_pairs(
    pairs: list[PreferencePair],
    tokenizer: Any,
    max_prompt_tokens: int,
    max_new_tokens: int,
    device: str | torch.device = "cpu",
) -> EncodedPairs:
    """Encode pairs the way the env encodes episodes (see the module docstring)."""
    P, N = max_prompt_tokens, max_new_tokens
    eos, pad = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
    D = len(pairs)
    prompt_ids = torch.full((D, P), pad, dtype=torch.long)
    prompt_mask = torch.zeros((D, P), dtype=torch.long)
    comps = {k: torch.full((D, N), pad, dtype=torch.long) for k in ("chosen", "rejected")}
    masks = {k: torch.zeros((D, N), dtype=torch.long) for k in ("chosen", "rejected")}
    truncated = 0
    if D:
        encode_prompt = PromptEncoder(tokenizer, P)  # the env's own prompt encoding
        for i, pair in enumerate(pairs):
            ids = encode_prompt(pair.prompt)
            prompt_ids[i, P - len(ids) :] = torch.tensor(ids)
            prompt_mask[i, P - len(ids) :] = 1
        for key in ("chosen", "rejected"):
            texts = [getattr(p, key) for p in pairs]
            for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
                if len(ids) < N:
                    ids = ids + [eos]  # the episode ended early, so it ended with EOS
                else:
                    truncated += len(ids) > N
                    ids = ids[:N]  # a truncated episode: no EOS
                comps[key][i, : len(ids)] = torch.tensor(ids)
                masks[key][i, : len(ids)] = 1
    return EncodedPairs(
        prompt_ids.to(device),
        prompt_mask.to(device),
        comps["chosen"].to(device),
        masks["chosen"].to(device),
        comps["rejected"].to(device),
        masks["rejected"].to(device),
        truncated,
    )


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the agent


class DPO(Agent):
    """Direct preference optimisation of an LM policy, evaluated on a textenv env.

    ``learn``, ``save``, ``load`` and ``evaluate`` work as for the RL agents; ``learn`` takes
    a budget in completion tokens trained on, or ``passes`` over the data.
    """

    config_class = DPOConfig
    algo = "dpo"
    config: DPOConfig

    def __init__(self, config: DPOConfig | None = None, *, _checkpoint: Path | None = None):
        super().__init__(config, _checkpoint=_checkpoint)
        cfg = self.config
        env_cfg = self.env.config
        self.reference = load_frozen_causal_lm(env_cfg.reference, env_cfg.device, env_cfg.dtype)
        self.pairs = read_preferences(cfg.data)
        if not self.pairs:
            raise ValueError(f"{cfg.data}: no preference pairs to train on")
        self.data_sha256 = _sha256(cfg.data)
        if _checkpoint is not None:
            self._check_same_data(_checkpoint)
        self.train_data = self._encode(self.pairs, cfg.data)
        self.val_pairs = read_preferences(cfg.val_data) if cfg.val_data else []
        self.val_data = self._encode(self.val_pairs, cfg.val_data) if self.val_pairs else None
        self._ref_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._perm: tuple[int, np.ndarray] | None = None

    def _encode(self, pairs: list[PreferencePair], source: Any) -> EncodedPairs:
        data = encode_pairs(
            pairs, self.policy.tokenizer, self.policy.P, self.policy.N, self.config.device
        )
        if data.truncated:
            warnings.warn(
                f"{source}: {data.truncated} completion(s) longer than max_new_tokens="
                f"{self.policy.N} tokens were cut to it (as the env truncates episodes)",
                stacklevel=3,
            )
        return data

    def _check_same_data(self, checkpoint: Path) -> None:
        saved = checkpoint / "dpo.json"
        if not saved.is_file():
            return
        expected = json.loads(saved.read_text()).get("data_sha256")
        if expected is not None and expected != self.data_sha256:
            raise ValueError(
                f"the preference data {self.config.data} differs from the file the checkpoint "
                f"{checkpoint} was trained on (sha256 {self.data_sha256[:12]}… vs "
                f"{expected[:12]}…): resuming would change the pair order; pass the original "
                f"file or start a new agent"
            )

    def _save_extra(self, folder: Path) -> None:
        info = {"data": self.config.data, "data_sha256": self.data_sha256, "pairs": len(self.pairs)}
        atomic_write_json(folder / "dpo.json", info)

    # ------------------------------------------------------------------ log-probs

    @property
    def _average(self) -> bool:
        return self.config.loss_type == "ipo"

    def _logps(
        self, model: torch.nn.Module, data: EncodedPairs, idx: torch.Tensor | slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of the chosen and rejected completions of pairs ``idx`` under ``model``
        (summed over tokens, or averaged for IPO): one forward over both."""
        cm, rm = data.chosen_mask[idx], data.rejected_mask[idx]
        width = int(torch.maximum(cm.sum(-1), rm.sum(-1)).max())  # drop all-padding columns
        mask = torch.cat([cm, rm])[:, :width]
        device = next(model.parameters()).device
        with self._autocast():  # config.compute_dtype, for the reference too (π = ρ at start)
            lp = sequence_logprobs(
                model,
                torch.cat([data.prompt_ids[idx], data.prompt_ids[idx]]).to(device),
                torch.cat([data.prompt_mask[idx], data.prompt_mask[idx]]).to(device),
                torch.cat([data.chosen[idx], data.rejected[idx]])[:, :width].to(device),
                mask.to(device),
                self.policy.temperature,
            )
        lp = lp.float().to(mask.device)
        total = (lp * mask).sum(-1)
        if self._average:
            total = total / mask.sum(-1).clamp_min(1)
        b = cm.shape[0]
        return total[:b], total[b:]

    @torch.no_grad()
    def _reference_logps(
        self, name: str, data: EncodedPairs, chunk: int = 64, *, spread: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's log-probs of every pair of ``data``, computed once and cached.

        ``spread`` (every rank must call it then): each rank scores a contiguous 1/N of the
        pairs and the ranks gather them, so every rank caches the same values, once."""
        if name not in self._ref_cache:
            D, rows = len(data), range(len(data))
            if spread and self.dist.enabled:
                share = -(-D // self.dist.world_size)  # ceil: the last rank may have fewer
                rows = range(min(self.dist.rank * share, D), min((self.dist.rank + 1) * share, D))
            parts = [
                self._logps(self.reference, data, slice(i, min(i + chunk, rows.stop)))
                for i in range(rows.start, rows.stop, chunk)
            ]
            chosen = torch.cat([c for c, _ in parts]) if parts else torch.zeros(0)
            rejected = torch.cat([r for _, r in parts]) if parts else torch.zeros(0)
            if spread and self.dist.enabled:
                # Equal shapes for the all-gather: pad each share to `share`, then drop the pad.
                both = torch.zeros(2, share, device=data.prompt_ids.device)
                both[0, : len(rows)], both[1, : len(rows)] = chosen, rejected
                gathered = self.dist.gather_cat(both.T.contiguous()).T  # (2, N·share)
                chosen, rejected = gathered[0, :D], gathered[1, :D]
            self._ref_cache[name] = (chosen.float(), rejected.float())
        return self._ref_cache[name]

    def _loss(
        self, data: EncodedPairs, name: str, idx: torch.Tensor | slice
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ref_c, ref_r = self._reference_logps(name, data)
        pol_c, pol_r = self._logps(self.policy.model, data, idx)
        cfg = self.config
        return dpo_loss(
            pol_c, pol_r, ref_c[idx], ref_r[idx], cfg.beta, cfg.loss_type, cfg.label_smoothing
        )

    @torch.no_grad()
    def evaluate_pairs(self, pairs: Any = None, chunk: int = 64) -> dict[str, float]:
        """Loss, implicit-reward accuracy (ties ½; chance = 0.5), its standard error, mean
        margin and rewards on preference pairs: ``None`` = ``val_data``, or a path, a list of
        rows / :class:`~textenv.preferences.PreferencePair` (anything ``read_preferences``
        reads)."""
        if pairs is None:
            if self.val_data is None:
                raise ValueError("no pairs given and the config has no val_data")
            data, name = self.val_data, "val"
        else:
            data, name = self._encode(list(read_preferences(pairs)), "pairs"), None
            if not len(data):
                raise ValueError("no preference pairs to evaluate")
        out: dict[str, list[torch.Tensor]] = {"loss": [], "chosen": [], "rejected": []}
        for i in range(0, len(data), chunk):
            idx = slice(i, i + chunk)
            if name is None:
                ref_c, ref_r = self._logps(self.reference, data, idx)
                pol_c, pol_r = self._logps(self.policy.model, data, idx)
                cfg = self.config
                losses, c, r = dpo_loss(
                    pol_c, pol_r, ref_c, ref_r, cfg.beta, cfg.loss_type, cfg.label_smoothing
                )
            else:
                losses, c, r = self._loss(data, name, idx)
            out["loss"].append(losses)
            out["chosen"].append(c)
            out["rejected"].append(r)
        losses, c, r = (torch.cat(out[k]).double() for k in ("loss", "chosen", "rejected"))
        acc = _accuracy(c - r)
        n = len(acc)
        return {
            "loss": float(losses.mean()),
            "accuracy": float(acc.mean()),
            "accuracy_sem": float(acc.std() / math.sqrt(n)) if n > 1 else float("nan"),
            "margin": float((c - r).mean()),
            "chosen_reward": float(c.mean()),
            "rejected_reward": float(r.mean()),
            "n": float(n),
        }

    # ------------------------------------------------------------------ data stream

    @property
    def tokens_per_pass(self) -> int:
        """Completion tokens (chosen + rejected) of one pass over the training pairs."""
        return self.train_data.num_tokens()

    def _permutation(self, p: int) -> np.ndarray:
        """The pair order of pass ``p`` (depends only on the seed and ``p``: resumable)."""
        if self._perm is None or self._perm[0] != p:
            rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, p, 3]))
            self._perm = (p, rng.permutation(len(self.train_data)))
        return self._perm[1]

    def _batch_indices(self, iteration: int) -> torch.Tensor:
        """Pairs of ``iteration``: the next ``batch_size`` of the per-pass permutations."""
        D, bs = len(self.train_data), self.config.batch_size
        pos, out = iteration * bs, []
        while len(out) < bs:
            p, off = divmod(pos, D)
            take = min(bs - len(out), D - off)
            out.extend(self._permutation(p)[off : off + take].tolist())
            pos += take
        return torch.tensor(out, dtype=torch.long, device=self.train_data.prompt_ids.device)

    # ------------------------------------------------------------------ training

    def _train_batch(self, idx: torch.Tensor) -> dict[str, float]:
        """``epochs`` passes over the pairs ``idx`` (the global batch, the same on every rank)
        in minibatches of ``minibatch_size`` pairs. With N ranks each rank takes its 1/N of
        every minibatch; each has as many pairs, so the mean of the ranks' pair means (what
        DDP's gradient average computes) is the minibatch's mean, and so are the metrics."""
        cfg = self.config
        self._reference_logps("train", self.train_data, spread=True)  # every rank, together
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("loss", "acc", "chosen", "rejected")
        }
        grads = []
        for _epoch in range(cfg.epochs):
            order = torch.randperm(len(idx), generator=self.generator, device=cfg.device)
            order = self.dist.broadcast(order)  # rank 0's order (the seeds agree; be sure)
            for start in range(0, len(idx), cfg.minibatch_size):
                rows = self.dist.shard(idx[order[start : start + cfg.minibatch_size]])
                losses, c, r = self._forward(self._loss, self.train_data, "train", rows)
                grads.append(self._step(losses.mean()))
                stats["loss"].append(losses.detach())
                stats["acc"].append(_accuracy(c - r))
                stats["chosen"].append(c)
                stats["rejected"].append(r)
        loss, acc, c, r = (torch.cat(stats[k]) for k in ("loss", "acc", "chosen", "rejected"))
        # Means over equal shares: their average over the ranks is the global mean (grad_norm
        # and beta are already equal on every rank).
        return self.dist.mean_metrics(
            {
                "dpo/loss": float(loss.mean()),
                "loss/policy": float(loss.mean()),
                "dpo/accuracy": float(acc.mean()),
                "dpo/margin": float((c - r).mean()),
                "dpo/chosen_reward": float(c.mean()),
                "dpo/rejected_reward": float(r.mean()),
                "dpo/beta": float(cfg.beta),
                "policy/grad_norm": sum(grads) / len(grads),
            }
        )

    def _eval_metrics(self) -> dict[str, float]:
        """Env metrics of the policy on the env's held-out prompts (and ``dpo/val_*``)."""
        cfg = self.config
        ev = evaluate(
            self.policy.model,
            cfg.env_id,
            n_prompts=cfg.eval_prompts,
            seed=EVAL_SEED,
            batch_size=cfg.num_envs,
            temperature=self.policy.temperature,
            **cfg.env_kwargs,
        )
        names = {"rm_score": "rm_score", "kl": "kl", "return": "return", "num_tokens": "length"}
        names["gold_score"] = "gold_score"
        m = {f"env/{v}": ev.metrics[k].mean for k, v in names.items() if k in ev.metrics}
        m["env/kl_coef"] = float(self.env.kl_coef)
        if self.val_data is not None:
            val = self.evaluate_pairs()
            m.update({f"dpo/val_{k}": v for k, v in val.items() if k != "n"})
        return m

    def learn(
        self,
        total_tokens: int | None = None,
        *,
        iterations: int | None = None,
        passes: float | None = None,
        checkpoint: str | os.PathLike | None = None,
    ) -> DPO:
        """Train until ``total_tokens`` completion tokens (chosen + rejected) have been trained
        on in all (counting earlier calls and the run a checkpoint came from) — or ``passes``
        over the data — or for at most ``iterations`` more iterations. The learning rate decays
        linearly to 0 at the budget; ``checkpoint``, ``save_every`` and SIGINT / SIGTERM work as
        in :meth:`Agent.learn` (whose loop this is; the progress bar shows the DPO loss).
        """
        if (total_tokens is None) == (passes is None):
            raise ValueError("pass exactly one of total_tokens or passes")
        if passes is not None:
            if not passes > 0:
                raise ValueError(f"passes must be > 0, got {passes}")
            total_tokens = max(1, math.ceil(passes * self.tokens_per_pass))
        super().learn(total_tokens, iterations=iterations, checkpoint=checkpoint)
        return self

    def _progress_postfix(self, row: dict[str, Any]) -> dict[str, str]:
        # DPO's rows carry env/* metrics only on evaluation iterations.
        return {"loss": f"{row['dpo/loss']:.3f}", "acc": f"{row['dpo/accuracy']:.2f}"}

    def _iterate(self) -> None:
        """One iteration: an evaluation when due, ``batch_size`` pairs trained on, a row."""
        cfg = self.config
        lr = self._apply_lr()
        metrics: dict[str, float] = {}
        t0 = time.perf_counter()
        # Rank 0 alone evaluates (and logs): the others go on to the update and wait for it
        # in its first collective.
        if cfg.eval_every and self.iteration % cfg.eval_every == 0 and self.dist.is_main:
            metrics.update(self._eval_metrics())  # the policy before this update
        t1 = time.perf_counter()
        self.generator.manual_seed(self._iter_seed(1))
        idx = self._batch_indices(self.iteration)
        metrics.update(self._train_batch(idx))
        t2 = time.perf_counter()
        n_tokens = self.train_data.num_tokens(idx)
        tail = {
            "dpo/passes": (self.iteration + 1) * cfg.batch_size / len(self.train_data),
            "time/eval_s": t1 - t0,
            "time/update_s": t2 - t1,
            "time/tokens_per_s": n_tokens / (t2 - t1),
        }
        self._end_iteration(metrics, n_tokens, lr, tail)
