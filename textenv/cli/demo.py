"""``textenv demo``: a few episodes of a registered env with a sampling agent, printed."""

from __future__ import annotations

import argparse

import textenv  # noqa: F401  (registers the ids)
from agents.evaluation import rollout_policy
from textenv.env.registration import make_lockstep_envs
from textenv.lm.models import load_causal_lm

DEFAULT_ENV = "textenv/Sentiment-v0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=DEFAULT_ENV)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    """Run a few episodes of a registered env with a sampling agent that uses the log π channel."""
    envs = make_lockstep_envs(args.env, args.episodes)
    env = envs.unwrapped
    # The demo agent is the reference LM itself, sampled at a lower temperature: the KL term
    # then measures how far that sharpening moves it from the reference.
    policy = load_causal_lm(env.config.reference)
    final = rollout_policy(policy, envs, None, seed=args.seed, temperature=args.temperature)
    print(
        f"env {args.env}: {envs.num_envs} episodes, policy = reference sampled at "
        f"T={args.temperature} (the env scores ρ at T={env.config.temperature}), β = {env.kl_coef:.3g}"
    )
    for i in range(envs.num_envs):
        gold = f"   gold {final['gold_score'][i]:+.3f}" if "gold_score" in final else ""
        print(f"[{i}] {final['prompt'][i]!r} → {final['text'][i]!r}")
        print(
            f"    reward {final['return'][i]:+.3f} = RM {final['rm_score'][i]:+.3f} "
            f"− β·KL ({final['kl'][i]:.3f}){gold}"
        )
    envs.close()
    return 0
