"""lth: lottery tickets in deep reinforcement learning, on Lightning, TorchRL and MLflow."""

__version__ = "0.1.0"
