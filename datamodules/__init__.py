"""LightningDataModules fed by TorchRL collectors."""

from datamodules.onpolicy import OnPolicyDataModule
from datamodules.replay import ReplayDataModule

__all__ = ["OnPolicyDataModule", "ReplayDataModule"]
