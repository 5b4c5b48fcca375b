"""lth: lottery tickets in deep reinforcement learning, on Lightning, TorchRL and MLflow.

Importing ``lth`` registers its gymnasium environments (``gym.make("lth/MazeGrid-v0")`` then works) and
nothing heavier: Lightning, TorchRL and MLflow load with the sub-packages that need them.
"""

from lth.registration import register_envs

__version__ = "0.1.0"

register_envs()
