"""The package's own agents: PPO (GAE, value head), RLOO and GRPO on one shared LM-policy layer,
and DPO / IPO (offline, on preference pairs) beside them.

They talk to textenv envs only through the Gymnasium API (``gym.make_vec``) and the log π
channel. ``from agents import PPO, PPOConfig``.
"""

from agents.base import Agent, AgentConfig
from agents.dpo import DPO, DPOConfig
from agents.grpo import GRPO, GRPOConfig
from agents.policy import LMPolicy, Rollout, make_envs
from agents.ppo import PPO, PPOConfig
from agents.rloo import RLOO, RLOOConfig

__all__ = [
    "Agent",
    "AgentConfig",
    "LMPolicy",
    "Rollout",
    "make_envs",
    "PPO",
    "PPOConfig",
    "RLOO",
    "RLOOConfig",
    "GRPO",
    "GRPOConfig",
    "DPO",
    "DPOConfig",
    "ALGORITHMS",
]

ALGORITHMS: dict[str, tuple[type[Agent], type[AgentConfig]]] = {
    "ppo": (PPO, PPOConfig),
    "rloo": (RLOO, RLOOConfig),
    "grpo": (GRPO, GRPOConfig),
    "dpo": (DPO, DPOConfig),
}
