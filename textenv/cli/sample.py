"""``textenv sample``: K completions per prompt into a K-way file ready for labelling."""

from __future__ import annotations

import argparse
from typing import Any

from textenv.preferences import sample_completions, write_jsonl
from textenv.tasks import get_task


def _task_defaults(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    try:
        return dict(get_task(name))
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def _cmd_sample(args: argparse.Namespace) -> int:
    task = _task_defaults(args.task)
    policy = args.policy or task.get("reference")
    prompts = args.prompts or task.get("prompts")
    if not policy or not prompts:
        raise SystemExit("give --policy and --prompts (or --task)")
    rows = sample_completions(
        policy,
        prompts,
        k=args.k,
        max_new_tokens=args.max_new_tokens or int(task.get("max_new_tokens", 24)),
        max_prompt_tokens=args.max_prompt_tokens or int(task.get("max_prompt_tokens", 64)),
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
        split=args.split,
        n_prompts=args.n_prompts,
        progress=True,
    )
    n = write_jsonl(args.out, rows)
    print(f"wrote {n} prompts × {args.k} completions to {args.out}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="built-in task whose reference/prompts/lengths are defaults")
    p.add_argument("--policy", help="LM spec (default: the task's reference LM)")
    p.add_argument("--prompts", help="prompt source (file, 'module:function'; default: task's)")
    p.add_argument("--split", default="train", choices=["train", "eval", "all"])
    p.add_argument("--n-prompts", type=int, default=None, help="use only the first N prompts")
    p.add_argument("-k", "--k", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--max-prompt-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output JSONL (K-way rows, ranking null)")
    p.set_defaults(func=_cmd_sample)
