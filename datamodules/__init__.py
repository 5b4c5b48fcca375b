"""LightningDataModules fed by TorchRL collectors."""

from datamodules.onpolicy import OnPolicyDataModule

__all__ = ["OnPolicyDataModule"]
