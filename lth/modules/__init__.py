"""The RL LightningModules."""

from lth.modules.base import AgentModule
from lth.modules.distill import Distill
from lth.modules.dqn import DQN
from lth.modules.ppo import PPO

__all__ = ["DQN", "PPO", "AgentModule", "Distill"]
