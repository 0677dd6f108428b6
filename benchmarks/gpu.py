"""GPU throughput for a GPT-2-small-sized policy: env rollouts against raw ``generate``, and one
PPO / GRPO iteration, in float32 and bfloat16.

The models are built from config (no download): the policy and the frozen reference are GPT-2
small (12 layers, 768 wide, 12 heads, 50257-token vocabulary, 1024 positions: 124M parameters)
on the offline byte tokenizer, and the reward model is a GPT-2-small-sized sequence classifier on
the same ids. For each batch size (64 by default) and 128 new tokens (EOS suppressed in
``generate``; with random weights the policy almost never samples it either):

* ``generate``: ``model.generate(do_sample=True, use_cache=True)`` on the policy alone;
* ``env``: the package's KV-cached sampler driving the native vector env (reference log-probs,
  reward model, KL: everything the env does) through :meth:`agents.policy.LMPolicy.rollout`;
* ``ppo`` / ``grpo``: one training iteration (rollout + update with the algorithms' default epochs
  and minibatches) after one warm-up iteration, split into rollout and update seconds.

``bfloat16`` runs the env's models in bfloat16 (``env_kwargs["dtype"]``) and the policy under
autocast (``compute_dtype``; weights and optimizer stay float32). Every timing follows a warm-up
and ``torch.cuda.synchronize``; peak memory is ``torch.cuda.max_memory_allocated`` per run.
Results go to ``benchmarks/results/gpu.json`` and a markdown table is printed. Usage::

    python benchmarks/gpu.py                      # CUDA: B = 64, 128 new tokens, fp32 and bf16
    python benchmarks/gpu.py --batch 64 128 --dtypes bfloat16
    python benchmarks/gpu.py --tiny               # CPU smoke run in seconds (tests use it)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ResultsFile, machine_info  # noqa: E402

from agents import GRPO, PPO, GRPOConfig, PPOConfig  # noqa: E402
from agents.distributed import autocast  # noqa: E402
from agents.policy import LMPolicy, make_envs  # noqa: E402
from textenv.lm.models import load_causal_lm, load_tokenizer  # noqa: E402

GPT2_SMALL = "layers=12,width=768,heads=12,vocab=50257,positions=1024"
SPECS = {
    "gpt2-small": (f"tiny:{GPT2_SMALL}", f"tiny-rm:{GPT2_SMALL},seed=1"),
    "tiny": ("tiny", "tiny-rm"),
}


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return None


REPEATS = 1  # timed runs per measurement (median), set by --repeats


def _timed(fn: Any, device: str) -> tuple[Any, float]:
    """``fn()``'s result and its median wall time over ``REPEATS`` runs (synchronised)."""
    times = []
    for _ in range(REPEATS):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return out, float(sorted(times)[len(times) // 2])


def profile_env(args: argparse.Namespace, batch: int, dtype: str, rows: int = 15) -> str:
    """torch.profiler's top operators (by self device time, else self CPU time) of one env
    rollout after a warm-up: where a dtype's time goes."""
    from torch.profiler import ProfilerActivity, profile

    envs = make_envs("textenv/TextGen-v0", batch, env_kwargs(args, dtype))
    policy = LMPolicy(envs, None, device=args.device)
    gen = torch.Generator(device=args.device)
    cuda = torch.device(args.device).type == "cuda"

    def run() -> Any:
        gen.manual_seed(0)
        with autocast(args.device, dtype):
            return policy.rollout(gen, seed=0)

    run()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run()
        _sync(args.device)
    envs.close()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def env_kwargs(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    policy, reward = SPECS[args.models]
    return {
        "reference": policy,
        "reward": reward,
        "max_prompt_tokens": args.prompt_tokens,
        "max_new_tokens": args.new_tokens,
        "kl_coef": 0.05,
        "device": args.device,
        "dtype": dtype,
    }


def bench_generate(args: argparse.Namespace, batch: int, dtype: str) -> dict[str, Any]:
    """Raw ``generate`` of ``new_tokens`` tokens for ``batch`` prompts (policy alone)."""
    spec = SPECS[args.models][0]
    model = load_causal_lm(spec, args.device)
    tok = load_tokenizer(spec)
    prompts = ["The weather today is", "Once upon a time", "My favourite food is"]
    enc = tok(
        [prompts[i % len(prompts)] for i in range(batch)],
        return_tensors="pt",
        padding="max_length",
        truncation=True,
        max_length=args.prompt_tokens,
    ).to(args.device)
    gen = {
        "do_sample": True,
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,  # exactly new_tokens per row
        "use_cache": True,
        "pad_token_id": tok.pad_token_id,
        "top_k": 0,
    }

    def run() -> torch.Tensor:
        with torch.no_grad(), autocast(args.device, dtype):
            return model.generate(**enc, **gen)

    run()  # warm-up
    _reset_peak(args.device)
    out, seconds = _timed(run, args.device)
    tokens = int(out.shape[0] * (out.shape[1] - enc["input_ids"].shape[1]))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "peak_gib": _peak_gib(args.device)}  # fmt: skip


def bench_env(args: argparse.Namespace, batch: int, dtype: str) -> dict[str, Any]:
    """The package's sampler driving the vector env (reference, reward model, KL)."""
    envs = make_envs("textenv/TextGen-v0", batch, env_kwargs(args, dtype))
    policy = LMPolicy(envs, None, device=args.device)
    gen = torch.Generator(device=args.device)

    def run() -> Any:
        gen.manual_seed(0)
        with autocast(args.device, dtype):
            return policy.rollout(gen, seed=0)

    run()
    _reset_peak(args.device)
    rollout, seconds = _timed(run, args.device)
    envs.close()
    return {"tokens": rollout.num_tokens, "seconds": seconds,
            "tokens_per_s": rollout.num_tokens / seconds, "peak_gib": _peak_gib(args.device)}  # fmt: skip


def bench_agent(args: argparse.Namespace, algo: str, batch: int, dtype: str) -> dict[str, Any]:
    """One training iteration (after a warm-up one) of PPO or GRPO at the algorithm's defaults."""
    common = {
        "env_id": "textenv/TextGen-v0",
        "env_kwargs": env_kwargs(args, dtype),
        "num_envs": batch,
        "device": args.device,
        "compute_dtype": dtype,
        "progress": False,
    }
    if algo == "ppo":
        agent: Any = PPO(PPOConfig(minibatch_size=min(16, batch), **common))
    else:
        group = min(8, batch)
        agent = GRPO(GRPOConfig(minibatch_size=min(32, batch), group_size=group, **common))
    agent.learn(10**12, iterations=1)
    _reset_peak(args.device)
    _, seconds = _timed(lambda: agent.learn(10**12, iterations=1), args.device)
    row = agent.history[-1]
    agent.close()
    tokens = int(row["tokens"] - agent.history[-2]["tokens"])
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "rollout_s": row["time/rollout_s"],
        "update_s": row["time/update_s"],
        "peak_gib": _peak_gib(args.device),
    }


def table(runs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| batch | dtype | generate tok/s | env rollout tok/s | env / generate | PPO iter s (rollout + update) | GRPO iter s (rollout + update) | peak GiB (PPO) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs.values():
        g, e, p, q = r["generate"], r["env"], r["ppo"], r["grpo"]
        peak = f"{p['peak_gib']:.1f}" if p["peak_gib"] is not None else "–"
        lines.append(
            f"| {r['batch']} | {r['dtype']} | {g['tokens_per_s']:.0f} | {e['tokens_per_s']:.0f} | "
            f"{e['tokens_per_s'] / g['tokens_per_s']:.2f} | "
            f"{p['seconds']:.2f} ({p['rollout_s']:.2f} + {p['update_s']:.2f}) | "
            f"{q['seconds']:.2f} ({q['rollout_s']:.2f} + {q['update_s']:.2f}) | {peak} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[64])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=8)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", choices=sorted(SPECS), default="gpt2-small")
    p.add_argument("--results", default=None, help="default results/gpu.json (--tiny: none)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny models, B=4, 8 tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="print the top operators of one env rollout per dtype instead",
    )
    args = p.parse_args(argv)
    global REPEATS
    REPEATS = max(1, args.repeats)
    if args.tiny:
        args.device, args.models, args.batch, args.new_tokens = "cpu", "tiny", [4], 8
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here; run on a GPU machine, or pass --tiny for a CPU smoke run"
        )
    torch.manual_seed(0)
    if args.profile:
        for batch in args.batch:
            for dtype in args.dtypes:
                print(f"== env rollout, B={batch}, {dtype}\n{profile_env(args, batch, dtype)}")
        return 0
    if args.results is None and args.tiny:
        args.results = tempfile.mkdtemp() + "/gpu_tiny.json"  # a smoke run leaves no results
    results = ResultsFile(Path(args.results or HERE / "results" / "gpu.json"), {})
    info = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    params = sum(x.numel() for x in load_causal_lm(SPECS[args.models][0], "cpu").parameters())
    results.data.update(
        machine=machine_info(**info), command=" ".join(sys.argv), policy_params=params,
        settings={k: getattr(args, k) for k in ("new_tokens", "prompt_tokens", "models", "device", "repeats")},
    )  # fmt: skip
    runs = results.data.setdefault("runs", {})
    for batch in args.batch:
        for dtype in args.dtypes:
            r = {"batch": batch, "dtype": dtype}
            r["generate"] = bench_generate(args, batch, dtype)
            r["env"] = bench_env(args, batch, dtype)
            r["ppo"] = bench_agent(args, "ppo", batch, dtype)
            r["grpo"] = bench_agent(args, "grpo", batch, dtype)
            runs[f"{batch}-{dtype}"] = r
            results.data["table_md"] = table(runs) + "\n"
            results.save()
            print(f"B={batch} {dtype}: done", flush=True)
    print(f"policy parameters: {params / 1e6:.1f}M")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
