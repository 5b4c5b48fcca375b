"""LightningDataModules fed by TorchRL collectors."""

from datamodules.expert import ExpertDataModule
from datamodules.onpolicy import OnPolicyDataModule
from datamodules.replay import ReplayDataModule

__all__ = ["ExpertDataModule", "OnPolicyDataModule", "ReplayDataModule"]
