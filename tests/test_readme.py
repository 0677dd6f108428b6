"""Every README python block marked <!-- tested --> runs, and prints what the README says it does.

Each block runs with its stdout captured; where a block prints or computes a value that means
something, a check below (found by a line of the block) asserts the fact behind it: the reward is
the RM score minus β·KL̂, KL̂ is k1 of the log π the example supplied, the evaluation of the
reference has zero KL, and so on. A block that prints without such a check or an assert of its
own fails `test_printing_blocks_are_checked`. CI runs the README's test command.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"<!-- tested -->\s*```python\n(.*?)```", README.read_text(), re.S)


def check_single_env(ns: dict[str, Any], out: str) -> None:
    info, reward, env = ns["info"], ns["reward"], ns["env"]
    assert ns["terminated"] or ns["truncated"]
    assert info["kl_coef"] == pytest.approx(0.05)  # Tiny-v0's β
    n = info["num_tokens"]
    ref = np.asarray(info["ref_logprobs"][:n])
    # The block told the env log π = −5.5 for every token: KL̂ = Σ k1 = Σ (−5.5 − log ρ).
    assert info["kl"] == pytest.approx(float(np.sum(-5.5 - ref)), rel=1e-6)
    assert reward == pytest.approx(info["rm_score"] - info["kl_coef"] * info["kl"], abs=1e-9)
    assert out.split()[-1] == str(reward) and str(info["kl"]) in out
    # [left-padded prompt | generated | padding]: the generated tokens are the last n unmasked
    # ones; an episode that sampled EOS (about 6% of unseeded runs) ends with it, and
    # info["text"] stops before it.
    tok = env.unwrapped.tokenizer
    generated = ns["obs"]["input_ids"][ns["obs"]["attention_mask"].astype(bool)][-n:]
    if ns["terminated"]:
        assert generated[-1] == tok.eos_token_id
        generated = generated[:-1]
    assert tok.decode(generated).endswith(info["text"])


def test_single_env_check_reads_the_generated_tokens_after_an_early_eos():
    """The check above on an episode that EOS ends early (the unseeded README loop samples one
    in about 6% of runs), so it cannot pass or fail by the draw."""
    env = gym.make("textenv/Tiny-v0")
    obs, info = env.reset(seed=0)
    out = io.StringIO()
    for action in (70, 71, 72, info["eos_token_id"]):
        env.unwrapped.set_action_logprob(-5.5)
        obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and info["text"] == "FGH"
    print(info["text"], info["rm_score"], info["kl"], info["kl_coef"], reward, file=out)
    ns = dict(
        env=env, obs=obs, reward=reward, terminated=terminated, truncated=truncated, info=info
    )
    check_single_env(ns, out.getvalue())


def check_vector_env(ns: dict[str, Any], out: str) -> None:
    envs, obs = ns["envs"], ns["obs"]
    assert ns["done"].all() and ns["reward"].shape == (8,)
    P = envs.unwrapped.config.max_prompt_tokens
    prompt_ids = obs["input_ids"][:, :P]
    assert (prompt_ids == prompt_ids[0]).all()  # the eight rows were pinned to one prompt
    text = envs.unwrapped.tokenizer.decode(prompt_ids[0][obs["attention_mask"][0, :P] == 1])
    assert text == "Once upon a time"[-len(text) :] and len(text) > 0


def check_custom_reward(ns: dict[str, Any], out: str) -> None:
    env = ns["env"]
    assert ns["info"]["prompt"] in ("Tell me a story", "Say hi")
    assert env.unwrapped.config.kl_reward == "per_token"
    env.unwrapped.set_action_logprob(-3.0)
    *_, reward_info = env.step(env.unwrapped.tokenizer.eos_token_id)  # an empty completion
    assert reward_info["rm_score"] == 0.0  # brevity: −len("")/10


def check_ppo(ns: dict[str, Any], out: str) -> None:
    agent = ns["agent"]
    ev = agent.evaluate()
    assert agent.tokens_seen >= 2_000
    assert set(ev) >= {"env/return", "env/rm_score", "env/gold_score", "env/kl", "env/kl_coef"}
    # Terminal KL with a fixed β: the mean return is the mean RM score minus β·mean KL̂.
    assert ev["env/return"] == pytest.approx(
        ev["env/rm_score"] - ev["env/kl_coef"] * ev["env/kl"], abs=1e-5
    )
    assert ev["env/kl"] > 0  # the policy was trained: it is no longer the reference
    assert "'env/return'" in out and "'env/gold_score'" in out


def check_sb3(ns: dict[str, Any], out: str) -> None:
    assert ns["model"].num_timesteps >= 256


def check_evaluate(ns: dict[str, Any], out: str) -> None:
    result = ns["result"]
    m = result.metrics
    assert m["kl"].mean == pytest.approx(0.0, abs=1e-6)  # the reference evaluated against itself
    assert 0.0 <= m["gold_score"].mean <= 1.0 and m["gold_score"].n == 32
    assert len(set(result.prompts)) == 32  # 32 distinct held-out prompts
    assert f"gold_score {m['gold_score']}" in out  # "mean ± s.e." as printed


# A line of the block → the check of what it does and prints.
CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    'env = gym.make("textenv/Tiny-v0")': check_single_env,
    'envs.reset(seed=0, options={"prompts": ["Once upon a time"] * 8})': check_vector_env,
    "reward=brevity,": check_custom_reward,
    "agent = PPO(PPOConfig(": check_ppo,
    "model.learn(256)": check_sb3,
    'result = evaluate("builtin:sort"': check_evaluate,
}


def test_readme_has_tested_examples():
    assert len(BLOCKS) >= 3
    for line in CHECKS:  # every check still finds its block
        assert any(line in block for block in BLOCKS), line


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_and_prints_what_it_says(index):
    block = BLOCKS[index]
    ns: dict[str, Any] = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, f"README block {index}", "exec"), ns)
    for line, check in CHECKS.items():
        if line in block:
            check(ns, out.getvalue())


def test_printing_blocks_are_checked():
    for index, block in enumerate(BLOCKS):
        if "print(" in block:
            checked = any(line in block for line in CHECKS) or "\nassert " in block
            assert checked, f"README block {index} prints but nothing checks what it prints"


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "<!-- ci:test -->" in ci
    text = README.read_text()
    block = re.search(r"<!-- ci:test -->\s*```bash\n(.*?)```", text, re.S).group(1)
    assert "pytest" in block


def test_readme_shows_the_tested_minimal_agent_verbatim():
    example = (README.parent / "examples" / "minimal_agent.py").read_text()
    assert example in README.read_text()
    assert len(example.strip().splitlines()) <= 40
