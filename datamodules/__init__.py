"""LightningDataModules fed by TorchRL collectors."""

from .expert import ExpertDataModule
from .onpolicy import OnPolicyDataModule
from .replay import ReplayDataModule

__all__ = ["ExpertDataModule", "OnPolicyDataModule", "ReplayDataModule"]
