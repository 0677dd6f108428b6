"""Generated tokens per second: the env's overhead over the model work it must do.

Same models (tiny GPT-2s built from config: 2 layers, 128 wide, vocab 512 for the policy, the
reference and the reward model), same batch, 8-token prompts, exactly 32 new tokens (EOS
suppressed). Variants:

(a) ``model.generate(do_sample=True, use_cache=True)`` on the policy alone;
(o) the model work with no env: (a) + one teacher-forced reference pass + one RM pass over the
    token ids (no decode / re-tokenise: the most favourable baseline), both through the same
    forwards the env runs (``sequence_logprobs`` and ``classifier_logits_left_padded``, which take
    the lean GPT-2 path), so that a faster model pass speeds the baselines as much as the env;
(s) the same model work as (o) with the package's KV-cached sampler instead of ``generate``: the
    strictest no-env baseline (the same decode loop (b) uses, minus everything the env does);
(b) the package's sampler driving the native vector env with the log π channel (reference
    log-probs, RM, KL: everything the env does); the RM shares the policy's tokenizer, so the
    env hands it the generated ids (:mod:`textenv.rewards.capabilities`);
(t) (b) with the same RM behind a plain text callable: the env decodes the completions and the RM
    re-tokenises ``prompt + completion`` (what any reward that reads text costs);
(c) the same sampler through B single envs from ``gym.make`` (a Python loop over envs per step);
(d) a naive batched env that re-runs the whole prefix through the reference every step (what
    replaying every token through a stateless env costs; the same forwards as the env's);
(f) (b) with a *fused* reward head on the reference's trunk (:mod:`textenv.rewards.fused`): the
    reference log-probs and the reward come from one forward instead of two.

Variants run round-robin ``--repeats`` times and the median is kept, so a burst of load hits all
of them alike; the CPU share other processes used during the run is recorded. Results go to
``benchmarks/results/throughput.json`` (and ``.md``). Usage::

    python benchmarks/throughput.py                 # B in {16, 64, 256}
    python benchmarks/throughput.py --batch 64 --repeats 3
    python benchmarks/throughput.py --threads 1   # when another process holds one of 2 cores
    python benchmarks/throughput.py --threads 1 --clock cpu   # a busy shared machine
    python benchmarks/throughput.py --scaling     # (b) over batch size × episode length + memory

``--env-only`` times the env's own work in variant (b) without the policy: the same sampled
tokens and log π replayed into the env, split into reset, the log π checks, the non-final steps
and the last step (which holds the reference and RM passes); CPU ms per rollout, the median of
``--repeats`` (at least 20), printed and written to ``results/throughput_env_only.json`` (or
``--out``). Run it with ``PYTHONPATH`` pointing at another checkout to compare code versions.

``--in-loop`` asks where (b)'s time between the policy's steps goes (wall clock, medians of
``--repeats``, at least 10; the last step, with the model passes, is left out): the env's calls
(``set_action_logprobs`` + ``step``) right after the policy's work, the same calls straight after
on a twin env (their cost with warm caches), and the policy's own time per rollout without and
with the env's calls between its steps (how much slower it runs after them); then the same for
a floor env that does only what the vector-env API asks (write the token, return fresh arrays),
what any env in Python would cost there, and for the floor env with the package's checks (log π,
actions, EOS) in the fewest numpy calls. Written to
``results/throughput_in_loop.json`` (or ``--out``).

``--split`` times (s) and (b) phase by phase, interleaved (wall clock, medians of ``--repeats``,
at least 10): (s)'s sampling and its two model passes; (b)'s reset, sampling (the policy's
steps, with the env's calls between them), the env's non-final steps and its last step (which
holds the same two passes). The differences say where (b)'s extra time goes. Written to
``results/throughput_split.json`` (or ``--out``).

``--scaling`` runs variant (b) over B ∈ {16, 64, 256} × new tokens ∈ {16, 32, 64, 128} and records
tokens/s, seconds per generated token and the peak resident memory of each rollout (the kernel's
high-water mark, reset before each config), into ``results/throughput_scaling.{json,png}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CPUClock, machine_info, wait_for_quiet  # noqa: E402

from textenv.env.kl import LOGPROB_MIN, LOGPROB_SLACK
from textenv.lm import lean_gpt2
from textenv.lm.models import load_causal_lm, load_frozen_causal_lm, load_sequence_classifier
from textenv.lm.padding import classifier_logits_left_padded
from textenv.lm.sampling import (
    IncrementalLM,
    SamplingConfig,
    next_token_logprobs,
    sample_tokens,
    sequence_logprobs,
)
from textenv.rewards import load_reward

RESULTS = Path(__file__).parent / "results"
VOCAB = 512
POLICY = f"tiny:layers=2,width=128,heads=4,vocab={VOCAB},seed=1"
REFERENCE = f"tiny:layers=2,width=128,heads=4,vocab={VOCAB},seed=0"
REWARD = f"tiny-rm:layers=2,width=128,heads=4,vocab={VOCAB},seed=2"
P, N = 8, 32
EOS = 256


def env_kwargs(new_tokens: int = N) -> dict:
    return dict(
        reference=REFERENCE,
        reward=REWARD,
        prompts=[f"Prompt {i:03d}" for i in range(64)],  # 10 byte tokens → truncated to 8
        split="all",
        max_prompt_tokens=P,
        max_new_tokens=new_tokens,
        max_episode_steps=new_tokens,
        kl_coef=0.05,
    )


def native_envs(batch: int, new_tokens: int = N, **overrides) -> gym.vector.VectorEnv:
    """The native vector env of variant (b) (lockstep: ``DISABLED`` autoreset), with
    ``overrides`` on top of :func:`env_kwargs`."""
    return gym.make_vec(
        "textenv/TextGen-v0",
        num_envs=batch,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        **{**env_kwargs(new_tokens), **overrides},
    )


def make_prompts(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(32, 127, (batch, P), generator=gen)
    return ids, torch.ones_like(ids)


def no_eos(logits: torch.Tensor) -> torch.Tensor:
    logits[:, EOS] = float("-inf")
    return logits


# --------------------------------------------------------------------------- variants


def run_generate(policy, batch: int, gen: torch.Generator) -> torch.Tensor:
    ids, mask = make_prompts(batch, gen)
    out = policy.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        use_cache=True,
        max_new_tokens=N,
        min_new_tokens=N,
        top_k=0,
        pad_token_id=EOS,
        eos_token_id=EOS,
    )
    return out


def run_model_work(policy, reference, rm, batch: int, gen: torch.Generator) -> None:
    out = run_generate(policy, batch, gen)
    prompt, completion = out[:, :P], out[:, P:]
    with torch.no_grad():
        sequence_logprobs(
            reference, prompt, torch.ones_like(prompt), completion, torch.ones_like(completion)
        )
        classifier_logits_left_padded(rm, out, torch.ones_like(out))


class Phases:
    """Wall-clock seconds per phase of one rollout (``--split``): each :meth:`mark` books the
    time since the previous one to its phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def _no_mark(phase: str) -> None:
    pass


def run_sampler_model_work(
    policy, reference, rm, batch: int, gen: torch.Generator, phases: Phases | None = None
) -> None:
    mark = phases.mark if phases else _no_mark
    cfg = SamplingConfig()
    ids, mask = make_prompts(batch, gen)
    lm = IncrementalLM(policy)
    logits = lm.prefill(ids, mask)
    tokens = []
    for t in range(N):
        token, _ = sample_tokens(next_token_logprobs(no_eos(logits), cfg), gen)
        tokens.append(token)
        if t + 1 < N:
            logits = lm.step(token)
    completion = torch.stack(tokens, 1)
    mark("policy")
    with torch.no_grad():
        sequence_logprobs(reference, ids, mask, completion, torch.ones_like(completion))
        full = torch.cat([ids, completion], 1)
        classifier_logits_left_padded(rm, full, torch.ones_like(full))
    mark("model passes")


def rollout_native(
    policy, envs, batch: int, gen: torch.Generator, phases: Phases | None = None
) -> None:
    mark = phases.mark if phases else _no_mark
    cfg = SamplingConfig()
    new_tokens = envs.unwrapped.config.max_new_tokens
    obs, _ = envs.reset(seed=int(torch.randint(0, 10**6, (1,), generator=gen)))
    mark("reset")
    lm = IncrementalLM(policy)
    logits = lm.prefill(
        torch.as_tensor(obs["input_ids"][:, :P]), torch.as_tensor(obs["attention_mask"][:, :P])
    )
    for t in range(new_tokens):
        tokens, logprobs = sample_tokens(next_token_logprobs(no_eos(logits), cfg), gen)
        mark("policy")
        envs.unwrapped.set_action_logprobs(logprobs.numpy())
        envs.step(tokens.numpy())
        if t + 1 < new_tokens:
            mark("env steps")
            logits = lm.step(tokens)
    mark("last step")


def rollout_singles(policy, envs: list, batch: int, gen: torch.Generator) -> None:
    cfg = SamplingConfig()
    seed = int(torch.randint(0, 10**6, (1,), generator=gen))
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    ids = torch.as_tensor(np.stack([o["input_ids"][:P] for o in obs]))
    mask = torch.as_tensor(np.stack([o["attention_mask"][:P] for o in obs]))
    lm = IncrementalLM(policy)
    logits = lm.prefill(ids, mask)
    for t in range(N):
        tokens, logprobs = sample_tokens(next_token_logprobs(no_eos(logits), cfg), gen)
        for i, env in enumerate(envs):
            env.unwrapped.set_action_logprob(float(logprobs[i]))
            env.step(int(tokens[i]))
        if t + 1 < N:
            logits = lm.step(tokens)


class NaiveEnv:
    """A batched env without a KV cache: every step re-runs the reference over the whole prefix."""

    def __init__(self, reference, rm) -> None:
        if not lean_gpt2.supports(reference):
            raise ValueError("the naive env runs the lean GPT-2 forward: a GPT-2 reference only")
        self.reference, self.rm = reference, rm

    def reset(self, ids: torch.Tensor) -> None:
        self.ids = ids
        self.kl = torch.zeros(ids.shape[0])

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor | None:
        ones = torch.ones_like(self.ids)
        positions = torch.arange(self.ids.shape[1]).expand_as(self.ids)
        logits, _ = lean_gpt2.lean_forward(
            self.reference, self.ids, ones, positions, logits_to_keep=1
        )
        ref = torch.log_softmax(logits[:, -1].float(), -1).gather(-1, tokens[:, None]).squeeze(-1)
        self.kl += logprobs - ref
        self.ids = torch.cat([self.ids, tokens[:, None]], 1)
        if self.ids.shape[1] == P + N:
            score = classifier_logits_left_padded(self.rm, self.ids, torch.ones_like(self.ids))
            return score[:, 0] - 0.05 * self.kl
        return None


def rollout_naive(policy, naive: NaiveEnv, batch: int, gen: torch.Generator) -> None:
    cfg = SamplingConfig()
    ids, mask = make_prompts(batch, gen)
    naive.reset(ids)
    lm = IncrementalLM(policy)
    logits = lm.prefill(ids, mask)
    for t in range(N):
        tokens, logprobs = sample_tokens(next_token_logprobs(no_eos(logits), cfg), gen)
        naive.step(tokens, logprobs)
        if t + 1 < N:
            logits = lm.step(tokens)


def text_only(reward):
    """The RM as a plain ``(prompts, completions, metadata)`` callable: it reads text only."""

    def score(prompts, completions, metadata):
        return reward(prompts, completions, metadata)

    return score


def fused_head_folder() -> str:
    """A fused reward head (random weights: speed does not depend on them) on the reference."""
    import tempfile

    from textenv.rewards.fused import FusedRewardHead

    folder = Path(tempfile.mkdtemp(prefix="textenv-fused-"))
    torch.manual_seed(0)
    FusedRewardHead(REFERENCE).save(folder)
    return str(folder)


# --------------------------------------------------------------------------- measuring


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def measure(batch: int, repeats: int, with_singles: bool, clock: str = "wall") -> dict:
    gen = torch.Generator().manual_seed(0)
    policy = load_causal_lm(POLICY)
    policy.generation_config.pad_token_id = EOS
    reference = load_frozen_causal_lm(REFERENCE)
    rm = load_sequence_classifier(REWARD)
    envs = native_envs(batch)
    fused_envs = native_envs(batch, reward=fused_head_folder())
    text_envs = native_envs(batch, reward=text_only(load_reward(REWARD)))
    variants: dict[str, Callable[[], object]] = {
        "a_generate": lambda: run_generate(policy, batch, gen),
        "o_model_work": lambda: run_model_work(policy, reference, rm, batch, gen),
        "s_sampler_model_work": lambda: run_sampler_model_work(policy, reference, rm, batch, gen),
        "b_native_env": lambda: rollout_native(policy, envs, batch, gen),
        "t_native_env_text_rm": lambda: rollout_native(policy, text_envs, batch, gen),
        "d_naive_env": lambda: rollout_naive(policy, NaiveEnv(reference, rm), batch, gen),
        "f_native_env_fused_rm": lambda: rollout_native(policy, fused_envs, batch, gen),
    }
    if with_singles:
        singles = [gym.make("textenv/TextGen-v0", **env_kwargs()) for _ in range(batch)]
        variants["c_single_envs"] = lambda: rollout_singles(policy, singles, batch, gen)
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    with CPUClock() as cpu:
        for _ in range(repeats):
            for name, fn in variants.items():
                start = CLOCKS[clock]()
                fn()
                times[name].append(CLOCKS[clock]() - start)
    tok_s = {k: batch * N / statistics.median(v) for k, v in times.items()}
    b = tok_s["b_native_env"]
    ratios = {
        "b/o": b / tok_s["o_model_work"],
        "b/s": b / tok_s["s_sampler_model_work"],
        "b/a": b / tok_s["a_generate"],
        "o/a": tok_s["o_model_work"] / tok_s["a_generate"],
        "b/d": b / tok_s["d_naive_env"],
        "b/t": b / tok_s["t_native_env_text_rm"],
        "f/a": tok_s["f_native_env_fused_rm"] / tok_s["a_generate"],
        "f/b": tok_s["f_native_env_fused_rm"] / b,
    }
    if with_singles:
        ratios["b/c"] = b / tok_s["c_single_envs"]
    return {
        "batch": batch,
        "tokens_per_s": tok_s,
        "ratios": ratios,
        "others_cpu_share": cpu.others_share,
        "repeats": repeats,
        "clock": clock,
    }


def env_only(batch: int, repeats: int, out: Path) -> dict:
    """The env's CPU time per rollout of (b), without the policy (see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    envs = native_envs(batch)
    tokens = torch.randint(32, 127, (N, batch), generator=gen).numpy()  # never EOS
    logprobs = (-5 * torch.rand(N, batch, generator=gen)).numpy()  # float32, as sampled
    env, clock = envs.unwrapped, time.process_time
    parts: dict[str, list[float]] = {
        "reset": [],
        "logprob_checks": [],
        "steps": [],
        "last_step": [],
    }
    for rep in range(max(repeats, 20) + 3):
        start = clock()
        envs.reset(seed=rep)
        reset, checks, steps = clock() - start, 0.0, 0.0
        for t in range(N):
            start = clock()
            env.set_action_logprobs(logprobs[t])
            mid = clock()
            envs.step(tokens[t])
            end = clock()
            checks += mid - start
            if t < N - 1:
                steps += end - mid
        if rep >= 3:  # warm-up
            for key, value in zip(parts, (reset, checks, steps, end - mid)):
                parts[key].append(value)
    ms = {key: 1e3 * statistics.median(values) for key, values in parts.items()}
    result = {
        "batch": batch,
        "new_tokens": N,
        "ms_per_rollout": ms,
        "repeats": len(parts["reset"]),
        "textenv_path": str(Path(sys.modules["textenv"].__file__).parent),
        "threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(
        f"B={batch}: " + "  ".join(f"{key} {value:.3f} ms" for key, value in ms.items()),
        flush=True,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


class FloorEnv:
    """What any Gymnasium vector env over token ids must do per step, and nothing more: keep
    log π, write the token into its observation, hand back fresh observation, reward and flag
    arrays and an info dict; no episode logic: a lower bound for (b)'s step. With ``checks``
    it also does what the package promises on top, in the fewest numpy calls: refuse log π
    outside the env's range or NaN and actions outside the vocabulary, and end rows on EOS."""

    def __init__(self, batch: int, checks: bool = False, new_tokens: int = N) -> None:
        self.obs_ids = np.zeros((batch, P + new_tokens), dtype=np.int64)
        self.obs_mask = np.zeros((batch, P + new_tokens), dtype=np.int64)
        self.checks = checks
        self.t = 0

    @property
    def unwrapped(self) -> FloorEnv:
        return self

    def reset(self, seed: int | None = None) -> None:
        self.obs_mask[:, P:] = 0
        self.t = 0

    def set_action_logprobs(self, logprobs: np.ndarray) -> None:
        self.logprobs = np.asarray(logprobs, dtype=np.float64)
        if self.checks and not (
            LOGPROB_MIN <= np.minimum.reduce(self.logprobs)
            and np.maximum.reduce(self.logprobs) <= LOGPROB_SLACK
        ):
            raise ValueError("log π out of range")

    def step(self, actions: np.ndarray) -> tuple:
        B = len(actions)
        terminated = np.zeros(B, dtype=bool)
        if self.checks:
            if not np.maximum.reduce(actions.view(np.uint64)) < VOCAB:
                raise ValueError("action outside the vocabulary")
            terminated = actions == EOS
            if terminated.any():
                raise NotImplementedError("the floor env has no episode ends")
        col = P + self.t
        self.obs_ids[:, col] = actions
        self.obs_mask[:, col] = 1
        self.t += 1
        obs = {"input_ids": self.obs_ids.copy(), "attention_mask": self.obs_mask.copy()}
        return obs, np.zeros(B), terminated, np.zeros(B, dtype=bool), {}


def in_loop(batch: int, repeats: int, out: Path) -> dict:
    """Where (b)'s extra time per step goes: the env's calls right after the policy's work
    against the same calls straight after on a twin env, and the policy's own time per rollout
    with and without the env's calls between its steps; the same for :class:`FloorEnv`, the
    least a step can do (wall clock, medians; see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    policy = load_causal_lm(POLICY)
    cfg = SamplingConfig()
    env, twin = native_envs(batch), native_envs(batch)
    floor, checked = FloorEnv(batch), FloorEnv(batch, checks=True)
    clock = time.perf_counter

    def rollout(envs: list) -> tuple[float, float, float]:
        """One rollout of N - 1 steps driving ``envs`` in turn after each policy step: seconds
        in the policy's work, in the first env's calls and in the second's."""
        for e in envs:
            e.reset(seed=int(torch.randint(0, 10**6, (1,), generator=gen)))
        ids, mask = make_prompts(batch, gen)
        lm = IncrementalLM(policy)
        policy_s, env_s = 0.0, [0.0, 0.0]
        start = clock()
        logits = lm.prefill(ids, mask)
        for _ in range(N - 1):  # the last step (reference and RM passes) is not timed here
            tokens, logprobs = sample_tokens(next_token_logprobs(no_eos(logits), cfg), gen)
            mid = clock()
            policy_s += mid - start
            for i, e in enumerate(envs):
                e.unwrapped.set_action_logprobs(logprobs.numpy())
                e.step(tokens.numpy())
                now = clock()
                env_s[i] += now - mid
                mid = now
            start = clock()
            logits = lm.step(tokens)
        return policy_s, env_s[0], env_s[1]

    parts: dict[str, list[float]] = {
        "policy_ms_without_env": [],
        "policy_ms_with_env": [],
        "env_us_per_step_after_policy": [],
        "env_us_per_step_after_env": [],
        "policy_ms_with_floor_env": [],
        "floor_env_us_per_step_after_policy": [],
        "policy_ms_with_checked_floor_env": [],
        "checked_floor_env_us_per_step_after_policy": [],
    }
    for rep in range(max(repeats, 10) + 2):
        alone = rollout([])[0]
        with_env = rollout([env])[0]
        _, cold, warm = rollout([env, twin])
        with_floor, floor_cold, _ = rollout([floor])
        with_checked, checked_cold, _ = rollout([checked])
        if rep >= 2:  # warm-up
            parts["policy_ms_without_env"].append(1e3 * alone)
            parts["policy_ms_with_env"].append(1e3 * with_env)
            parts["env_us_per_step_after_policy"].append(1e6 * cold / (N - 1))
            parts["env_us_per_step_after_env"].append(1e6 * warm / (N - 1))
            parts["policy_ms_with_floor_env"].append(1e3 * with_floor)
            parts["floor_env_us_per_step_after_policy"].append(1e6 * floor_cold / (N - 1))
            parts["policy_ms_with_checked_floor_env"].append(1e3 * with_checked)
            parts["checked_floor_env_us_per_step_after_policy"].append(1e6 * checked_cold / (N - 1))
    medians = {key: statistics.median(values) for key, values in parts.items()}
    result = {
        "batch": batch,
        "steps_timed": N - 1,
        "threads": torch.get_num_threads(),
        "medians": medians,
        "runs": parts,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(
        f"B={batch}: policy {medians['policy_ms_without_env']:.2f} ms per rollout alone, "
        f"{medians['policy_ms_with_env']:.2f} with the env between its steps; the env's calls "
        f"{medians['env_us_per_step_after_policy']:.1f} us a step after the policy, "
        f"{medians['env_us_per_step_after_env']:.1f} straight after the same calls; the floor "
        f"env's {medians['floor_env_us_per_step_after_policy']:.1f} us a step, the policy "
        f"{medians['policy_ms_with_floor_env']:.2f} ms with them; with the checks "
        f"{medians['checked_floor_env_us_per_step_after_policy']:.1f} us and "
        f"{medians['policy_ms_with_checked_floor_env']:.2f} ms",
        flush=True,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def split(batch: int, repeats: int, out: Path) -> dict:
    """Where (b)'s time goes against (s)'s: both rollouts timed by phase, interleaved (wall
    clock, medians of ``repeats``, at least 10; see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    policy = load_causal_lm(POLICY)
    reference = load_frozen_causal_lm(REFERENCE)
    rm = load_sequence_classifier(REWARD)
    envs = native_envs(batch)
    variants = {
        "s": lambda phases: run_sampler_model_work(policy, reference, rm, batch, gen, phases),
        "b": lambda phases: rollout_native(policy, envs, batch, gen, phases),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for rep in range(max(repeats, 10) + 2):
        for name, run in variants.items():
            phases = Phases()
            run(phases)
            ms = {key: 1e3 * value for key, value in phases.seconds.items()}
            ms["total"] = sum(ms.values())  # the phases cover the rollout
            if rep >= 2:  # warm-up
                runs[name].append(ms)
    medians = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for name, rs in runs.items()
    }
    s, b = medians["s"], medians["b"]
    # (b)'s extra time, phase by phase: the policy's steps with the env's calls between them,
    # the env's own calls, and the last step against (s)'s two model passes.
    extra = {
        "reset": b["reset"],
        "policy": b["policy"] - s["policy"],
        "env steps": b["env steps"],
        "last step over the model passes": b["last step"] - s["model passes"],
        "total": b["total"] - s["total"],
    }
    result = {
        "batch": batch,
        "new_tokens": N,
        "threads": torch.get_num_threads(),
        "repeats": len(runs["s"]),
        "ms_per_rollout": medians,
        "b_minus_s_ms": extra,
        "b/s": s["total"] / b["total"],
        "runs": runs,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    rows = ["| phase | (s) ms | (b) ms | (b) − (s) ms |", "|---|---:|---:|---:|"]
    for phase, s_key, b_key, diff in (
        ("reset", None, "reset", "reset"),
        ("policy: prefill and 32 sampling steps", "policy", "policy", "policy"),
        ("the env's 31 non-final steps", None, "env steps", "env steps"),
        ("model passes / last step", "model passes", "last step", "last step over the model passes"),
        ("rollout", "total", "total", "total"),
    ):  # fmt: skip
        s_ms = f"{s[s_key]:.2f}" if s_key else "–"
        rows.append(f"| {phase} | {s_ms} | {b[b_key]:.2f} | {extra[diff]:+.2f} |")
    result["table_md"] = "\n".join(rows) + "\n"
    print(result["table_md"] + f"(b)/(s) = {result['b/s']:.3f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def peak_rss_mib(reset: bool = False) -> float:
    """This process's resident-memory high-water mark (Linux); ``reset`` starts a new one."""
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def scaling(batches: list[int], lengths: list[int], repeats: int, out: Path) -> dict:
    """Variant (b) over batch size × episode length: is the per-token cost flat? Peak memory."""
    gen = torch.Generator().manual_seed(0)
    policy = load_causal_lm(POLICY)
    rows = []
    for new_tokens in lengths:
        for batch in batches:
            envs = native_envs(batch, new_tokens)
            rollout_native(policy, envs, batch, gen)  # warm-up
            base = peak_rss_mib(reset=True)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                rollout_native(policy, envs, batch, gen)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            row = {
                "batch": batch,
                "new_tokens": new_tokens,
                "tokens_per_s": batch * new_tokens / seconds,
                "us_per_token": 1e6 * seconds / (batch * new_tokens),
                "peak_rss_mib": peak_rss_mib(),
                "rss_before_mib": base,
            }
            rows.append(row)
            print(
                f"B={batch:4d} N={new_tokens:4d}  {row['tokens_per_s']:8.0f} tok/s  "
                f"{row['us_per_token']:7.1f} µs/token  peak RSS {row['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
            envs.close()
    cells = {(r["new_tokens"], r["batch"]): r for r in rows}
    lines = [
        "| new tokens | "
        + " | ".join(f"B={b}: tok/s, µs/token, peak RSS MiB" for b in batches)
        + " |",
        "|---" * (len(batches) + 1) + "|",
    ]
    for n in lengths:
        row_cells = (cells[(n, b)] for b in batches)
        lines.append(
            f"| {n} | "
            + " | ".join(
                f"{c['tokens_per_s']:.0f}, {c['us_per_token']:.0f}, {c['peak_rss_mib']:.0f}"
                for c in row_cells
            )
            + " |"
        )
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine_info(processor=platform.processor()),
        "rows": rows,
        "setup": {"policy": POLICY, "prompt_tokens": P},
        "threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "table_md": "\n".join(lines) + "\n",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for batch in batches:
        sub = [r for r in rows if r["batch"] == batch]
        ax1.plot(
            [r["new_tokens"] for r in sub],
            [r["us_per_token"] for r in sub],
            "o-",
            label=f"B={batch}",
        )
        ax2.plot(
            [r["new_tokens"] for r in sub],
            [r["peak_rss_mib"] for r in sub],
            "o-",
            label=f"B={batch}",
        )
    ax1.set(
        xlabel="new tokens per episode",
        ylabel="µs per generated token",
        xscale="log",
        title="native env, per-token cost",
    )
    ax2.set(
        xlabel="new tokens per episode",
        ylabel="peak RSS (MiB)",
        xscale="log",
        title="peak resident memory",
    )
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--singles-max-batch", type=int, default=256)
    parser.add_argument("--wait-quiet", type=float, default=120.0, help="max seconds to wait")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--scaling", action="store_true", help="batch × length curves + memory")
    parser.add_argument("--env-only", action="store_true", help="the env's own time, no policy")
    parser.add_argument(
        "--in-loop", action="store_true", help="the env's calls between the policy's steps"
    )
    parser.add_argument("--split", action="store_true", help="(b) against (s), phase by phase")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed seconds (a quiet machine); cpu: this process's CPU seconds, which "
        "other processes barely move (use with --threads 1 on a shared machine)",
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # The side modes: (chosen, default results file, wait for a quiet machine, what runs).
    modes = [
        (args.env_only, "throughput_env_only.json", False, lambda out: env_only(args.batch[0], args.repeats, out)),
        (args.in_loop, "throughput_in_loop.json", True, lambda out: in_loop(args.batch[0], args.repeats, out)),
        (args.split, "throughput_split.json", True, lambda out: split(args.batch[0], args.repeats, out)),
        (args.scaling, "throughput_scaling.json", True, lambda out: scaling(args.batch, args.lengths, args.repeats, out)),
    ]  # fmt: skip
    for chosen, default_file, quiet, run in modes:
        if chosen:
            if quiet:
                wait_for_quiet(args.wait_quiet)
            run(args.out if args.out.name != "throughput.json" else RESULTS / default_file)
            return 0

    share_before = wait_for_quiet(args.wait_quiet)
    rows = []
    for batch in args.batch:
        row = measure(batch, args.repeats, batch <= args.singles_max_batch, args.clock)
        rows.append(row)
        r = row["ratios"]
        print(
            f"B={batch:4d}  "
            + "  ".join(f"{k}={v:8.0f}" for k, v in row["tokens_per_s"].items())
            + "  |  "
            + "  ".join(f"{k}={v:.2f}" for k, v in r.items())
            + f"  (others used {row['others_cpu_share']:.0%} of the CPUs)",
            flush=True,
        )
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": machine_info(processor=platform.processor()),
        "setup": {
            "policy": POLICY,
            "reference": REFERENCE,
            "reward": REWARD,
            "prompt_tokens": P,
            "new_tokens": N,
        },
        "others_cpu_share_before": share_before,
        "rows": rows,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    lines = [
        "| B | (a) generate | (o) model work | (s) model work, own sampler | (b) native env "
        "| (t) native env, text RM | (c) single envs | (d) naive env | (f) native env, fused RM "
        "| b/o | b/s | b/t | b/a | b/c | b/d | f/a | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t, r = row["tokens_per_s"], row["ratios"]
        lines.append(
            f"| {row['batch']} | {t['a_generate']:.0f} | {t['o_model_work']:.0f} | "
            f"{t['s_sampler_model_work']:.0f} | {t['b_native_env']:.0f} | "
            f"{t['t_native_env_text_rm']:.0f} | {t.get('c_single_envs', float('nan')):.0f} | "
            f"{t['d_naive_env']:.0f} | {t['f_native_env_fused_rm']:.0f} | {r['b/o']:.2f} | "
            f"{r['b/s']:.2f} | {r['b/t']:.2f} | "
            f"{r['b/a']:.2f} | {r.get('b/c', float('nan')):.2f} | {r['b/d']:.2f} | {r['f/a']:.2f} | "
            f"{row['others_cpu_share']:.0%} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
