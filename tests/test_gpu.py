"""The device and precision path: bfloat16 end to end on the CPU (always), ``device="cuda"`` for the
env's models and the agents (only where CUDA is present), and ``benchmarks/gpu.py --tiny``."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import GRPO, PPO, GRPOConfig, PPOConfig
from agents.distributed import autocast, float32
from textenv.lm.models import _build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SMALL = dict(num_envs=8, minibatch_size=4, epochs=1, progress=False)


def _policy_moved(agent, start) -> float:
    return max(
        float((p.detach() - p0).abs().max())
        for p, p0 in zip(agent.policy.model.parameters(), start)
    )


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_bfloat16_trains_end_to_end_on_cpu(algo):
    """bf16 env models + bf16 autocast policy: finite metrics, float32 weights that move."""
    kw = dict(SMALL, compute_dtype="bfloat16", env_kwargs={"dtype": "bfloat16"})
    if algo == "ppo":
        agent = PPO(PPOConfig(**kw))
    else:
        agent = GRPO(GRPOConfig(group_size=4, **kw))
    assert next(agent.env.core.reference.parameters()).dtype == torch.bfloat16
    start = [p.detach().clone() for p in agent.policy.model.parameters()]
    agent.learn(10**6, iterations=2)
    assert all(p.dtype == torch.float32 for p in agent.policy.model.parameters())
    assert _policy_moved(agent, start) > 1e-5
    row = agent.history[-1]
    for key in ("loss/policy", "policy/grad_norm", "env/kl", "env/return"):
        assert math.isfinite(row[key]), key
    agent.close()


def test_bfloat16_forwards_run_in_bfloat16_and_losses_in_float32():
    agent = PPO(PPOConfig(**SMALL, compute_dtype="bfloat16"))
    agent.generator.manual_seed(0)
    with agent._autocast():
        rollout = agent._collect()
    assert rollout.logprobs.dtype == torch.float32
    seen = []
    hook = agent.policy.model.transformer.h[0].mlp.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype)
    )
    logprobs, values = agent._forward(agent._score, rollout, torch.arange(4))
    hook.remove()
    assert seen == [torch.bfloat16]  # the model's matmuls ran in bf16 ...
    assert logprobs.dtype == values.dtype == torch.float32  # ... what the loss sees is float32
    assert logprobs.requires_grad and values.requires_grad
    # bf16 log-probs stay close to float32 ones (same weights).
    ref, _ = PPO._score(agent, rollout, torch.arange(4))
    m = rollout.mask[:4]
    assert float((logprobs - ref).detach()[m].abs().max()) < 0.1
    agent.close()


def test_compute_dtype_is_checked():
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        PPOConfig(compute_dtype="float16")
    with pytest.raises(ValueError, match="compute dtype must be one of"):
        autocast("cpu", "int8")
    x = torch.ones(2, dtype=torch.bfloat16)
    assert (
        float32((x, 3))[0].dtype == torch.float32
        and float32(torch.ones(2, dtype=torch.long)).dtype == torch.long
    )


# --------------------------------------------------------------------------- CUDA (skipped here)


@cuda
def test_env_models_on_cuda_in_bfloat16(tiny_kwargs):
    env = gym.make("textenv/TextGen-v0", **tiny_kwargs, device="cuda", dtype="bfloat16")
    core = env.unwrapped.core
    assert next(core.reference.parameters()).device.type == "cuda"
    env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += reward
        done = terminated or truncated
    assert np.isfinite(total) and np.isfinite(info["kl"])
    env.close()


@cuda
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_ppo_and_grpo_train_save_and_resume_on_cuda(tmp_path, compute_dtype):
    kw = dict(SMALL, device="cuda", compute_dtype=compute_dtype)
    for agent in (PPO(PPOConfig(**kw)), GRPO(GRPOConfig(group_size=4, **kw))):
        assert agent.config.env_kwargs["device"] == "cuda"  # the env's models follow the policy
        assert next(agent.env.core.reference.parameters()).device.type == "cuda"
        start = [p.detach().clone() for p in agent.policy.model.parameters()]
        agent.learn(10**6, iterations=2)
        assert _policy_moved(agent, start) > 1e-5
        assert math.isfinite(agent.history[-1]["loss/policy"])
        path = agent.save(tmp_path / agent.algo)
        again = type(agent).load(path, progress=False)
        assert next(again.policy.model.parameters()).device.type == "cuda"
        for p, q in zip(agent.policy.model.parameters(), again.policy.model.parameters()):
            assert torch.equal(p, q)
        again.learn(10**6, iterations=1)
        assert again.iteration == 3
        again.close()
        agent.close()


# --------------------------------------------------------------------------- the benchmark script


def test_gpu_benchmark_tiny_smoke_run(tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    spec = importlib.util.spec_from_file_location("gpu_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu.json"
    assert module.main(["--tiny", "--results", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["runs"]) == {"4-float32", "4-bfloat16"}
    for run in data["runs"].values():
        for part in ("generate", "env", "ppo", "grpo"):
            assert run[part]["tokens"] > 0 and run[part]["tokens_per_s"] > 0, part
        assert run["generate"]["tokens"] == 4 * 8  # exactly new_tokens per row
        assert run["ppo"]["rollout_s"] > 0 and run["ppo"]["update_s"] > 0
    # The full-size model really is GPT-2 small: 124M parameters, built from config.
    with torch.device("meta"):
        model = _build_tiny(module.SPECS["gpt2-small"][0])
    assert sum(p.numel() for p in model.parameters()) == 124_439_808
