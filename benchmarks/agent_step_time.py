"""CPU time of one rollout and one update of ``agents.GRPO`` and ``agents.PPO``, at the settings
of ``trl_side_by_side.py`` (Sentiment-v0, ``builtin:prose``, 32 completions of ≤ 24 tokens,
VADER reward, β 0.05; GRPO 4 prompts × 8, one gradient step; PPO 4 epochs × 1 minibatch of 32),
one torch thread.

The same rollout batch is collected again (same seed) and the update is repeated on one fixed
batch (lr 0, so the weights stay put); each figure is the best of ``--repeats`` rounds of two
calls, in CPU seconds of this process, so that other processes on a shared machine disturb it
little. Run it on two versions of the code to see what a change gave: ``--label`` names the
measurement in ``benchmarks/results/agent_step_time.json`` (the commit is recorded), e.g.::

    python benchmarks/agent_step_time.py --label current
    git worktree add /tmp/prev <commit>   # or: git archive <commit> | tar -x -C /tmp/prev
    PYTHONPATH=/tmp/prev python benchmarks/agent_step_time.py --label previous --code <commit>

(``PYTHONPATH`` makes the other checkout's ``agents`` and ``textenv`` the ones imported.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "agent_step_time.json"


def measure(algo: str, repeats: int) -> dict[str, float]:
    import torch

    from agents import GRPO, PPO, GRPOConfig, PPOConfig

    env_kwargs = {
        "reward": "textenv.tasks.sentiment:gold_score",
        "gold": None,
        "kl_coef": 0.05,
        "max_new_tokens": 24,
        "temperature": 1.0,
    }
    common = dict(
        env_id="textenv/Sentiment-v0",
        env_kwargs=env_kwargs,
        lr=0.0,
        anneal_lr=False,
        seed=0,
        progress=False,
    )
    if algo == "grpo":
        config = GRPOConfig(
            num_envs=32, minibatch_size=32, epochs=1, group_size=8, beta=0.05, **common
        )
        agent = GRPO(config)
    else:
        agent = PPO(PPOConfig(num_envs=32, minibatch_size=32, epochs=4, **common))
    agent.learn(10**12, iterations=1)  # warm-up
    rollout = agent._collect()

    def collect() -> None:
        agent.generator.manual_seed(1)
        agent._collect()

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t = time.process_time()
            fn()
            fn()
            times.append((time.process_time() - t) / 2)
        return min(times)

    out = {
        "collect_ms": 1e3 * best(collect),
        "update_ms": 1e3 * best(lambda: agent._update(rollout)),
        "tokens": int(rollout.mask.sum()),
        "torch": torch.__version__,
    }
    out["total_ms"] = out["collect_ms"] + out["update_ms"]
    agent.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--algos", nargs="+", default=["grpo", "ppo"])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--code", help="the commit measured (default: git HEAD of its checkout)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import agents

    source = Path(agents.__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True
    ).stdout.strip()
    record = {
        "code": args.code or commit or str(source),
        "source": str(source),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    for algo in args.algos:
        record[algo] = measure(algo, args.repeats)
        r = record[algo]
        print(f"{algo}: collect {r['collect_ms']:.1f} ms, update {r['update_ms']:.1f} ms")
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data[args.label] = record
    labels = [k for k in data if isinstance(data[k], dict) and "grpo" in data[k]]
    if "previous" in data and "current" in data:
        p, c = data["previous"], data["current"]
        data["speedup"] = {
            f"{algo}_{part}": p[algo][f"{part}_ms"] / c[algo][f"{part}_ms"]
            for algo in ("grpo", "ppo")
            if algo in p and algo in c
            for part in ("collect", "update", "total")
        }
        lines = [
            f"| agent | part | previous ({p['code']}), ms | current ({c['code']}), ms | speed-up |",
            "|---|---|---:|---:|---:|",
        ]
        for algo in ("grpo", "ppo"):
            for part in ("collect", "update", "total"):
                if algo in p and algo in c:
                    a, b = p[algo][f"{part}_ms"], c[algo][f"{part}_ms"]
                    lines.append(f"| {algo.upper()} | {part} | {a:.1f} | {b:.1f} | {a / b:.2f}× |")
        data["table_md"] = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from textenv.files import atomic_write_text

    atomic_write_text(args.out, json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out} ({', '.join(labels)})")


if __name__ == "__main__":
    main()
