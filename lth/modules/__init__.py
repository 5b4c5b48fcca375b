"""The RL LightningModules."""

from lth.modules.base import AgentModule
from lth.modules.ppo import PPO

__all__ = ["PPO", "AgentModule"]
