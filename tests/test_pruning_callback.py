"""PruningCallback in real fits: supervised (automatic optimisation) and PPO (manual, TorchRL losses)."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth.callbacks import PruningCallback
from lth.callbacks.masks import count, global_magnitude_masks


class Regressor(L.LightningModule):
    """A plain supervised module; validation logs a score that the callback can monitor."""

    def __init__(self, optimizer: str = "adam") -> None:
        super().__init__()
        self.optimizer = optimizer
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/score", -nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        params = self.parameters()
        return {
            "adam": lambda: torch.optim.Adam(params, lr=1e-2),
            "adamw": lambda: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
            "sgd": lambda: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
        }[self.optimizer]()


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1
    return DataLoader(TensorDataset(x, y), batch_size=32)


class MaskProbe(Callback):
    """Checks after every training batch that every pruned weight is exactly zero."""

    def __init__(self, cb: PruningCallback) -> None:
        self.cb, self.checks = cb, 0

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        params = dict(pl_module.named_parameters())
        for name, mask in self.cb.masks.items():
            assert torch.all(params[name][~mask] == 0), name
        self.checks += 1


def _fit(model, cb, *extra, epochs: int = 2, ckpt_path: str | None = None) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[cb, *extra],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(extra and isinstance(extra[0], ModelCheckpoint)),
        num_sanity_val_steps=0,
    )
    trainer.fit(model, _loader(), _loader(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_levels_density_masks_and_rewind(optimizer: str) -> None:
    torch.manual_seed(0)
    model = Regressor(optimizer)
    init = copy.deepcopy(model.state_dict())
    cb = PruningCallback(amount=0.2, monitor="val/score", seed=1)
    probe = MaskProbe(cb)
    total = sum(m.weight.numel() for m in model.net if isinstance(m, nn.Linear))
    remaining = total
    for level in range(3):
        _fit(model, cb, probe)
        remaining -= round(0.2 * remaining)
        assert cb.level == level + 1
        assert count(cb.masks) == remaining
        assert cb.density == pytest.approx(remaining / total)
        state = model.state_dict()
        for name, mask in cb.masks.items():
            assert torch.equal(state[name], init[name] * mask)  # survivors rewound to init, pruned exactly 0
        for name in ("net.0.bias", "net.2.bias", "net.4.bias"):
            assert name not in cb.masks and torch.equal(state[name], init[name])  # biases reset, never pruned
    assert probe.checks > 0
    assert set(cb.masks) == {"net.0.weight", "net.2.weight", "net.4.weight"}


def test_prunes_from_the_best_validated_weights() -> None:
    class Snapshot(Callback):
        def __init__(self):
            self.best, self.score = None, None

        def on_validation_end(self, trainer, pl_module):
            score = float(trainer.callback_metrics["val/score"])
            if self.score is None or score > self.score:
                self.score = score
                self.best = {k: v.clone() for k, v in pl_module.state_dict().items()}

    torch.manual_seed(0)
    model = Regressor("sgd")
    cb = PruningCallback(monitor="val/score")
    snap = Snapshot()
    _fit(model, cb, snap, epochs=4)
    before = {name: torch.ones_like(m) for name, m in cb.masks.items()}
    expected = global_magnitude_masks({n: snap.best[n] for n in before}, before, 0.2)
    assert all(torch.equal(cb.masks[n], expected[n]) for n in expected)


def test_late_rewinding_resets_to_the_weights_after_n_steps() -> None:
    class StepRecorder(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 5:
                self.at_5 = {k: v.clone() for k, v in pl_module.state_dict().items()}

    torch.manual_seed(0)
    model, rec = Regressor(), StepRecorder()
    cb = PruningCallback(rewind=5, monitor="val/score")
    _fit(model, cb, rec)
    for name, mask in cb.masks.items():
        assert torch.equal(model.state_dict()[name], rec.at_5[name] * mask)
    assert torch.equal(model.state_dict()["net.0.bias"], rec.at_5["net.0.bias"])


def test_checkpoints_hold_zeros_plain_keys_and_resume_with_the_masks(tmp_path) -> None:
    torch.manual_seed(0)
    model = Regressor()
    cb = PruningCallback(monitor="val/score")
    _fit(model, cb)  # level 0 -> 1
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _fit(model, cb, ckpt)  # trains level 1, saves, then prunes to level 2
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    dense = Regressor()
    dense.load_state_dict(saved["state_dict"])  # plain keys: loads into an unpruned copy
    state = saved["callbacks"]["PruningCallback"]
    assert state["level"] == 1
    for name, mask in state["masks"].items():
        assert torch.all(saved["state_dict"][name][~mask] == 0)
    resumed_cb = PruningCallback(monitor="val/score")  # the finished fit, resumed: only its pruning is left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(Regressor(), resumed_cb, epochs=2, ckpt_path=str(tmp_path / "last.ckpt"))
    assert not [w for w in caught if "never logged" in str(w.message)]  # pruned from the restored best weights
    assert resumed_cb.level == 2
    assert all(torch.equal(resumed_cb.masks[n], cb.masks[n]) for n in cb.masks)


def test_module_selection_and_a_clear_error_when_nothing_matches() -> None:
    model = Regressor()
    cb = PruningCallback(modules=["net.0", "net.4"], monitor="val/score")
    _fit(model, cb, epochs=1)
    assert set(cb.masks) == {"net.0.weight", "net.4.weight"}
    with pytest.raises(ValueError, match="net.2"):
        _fit(Regressor(), PruningCallback(modules=["actor"]), epochs=1)


def test_state_dict_restores_a_chain_exactly() -> None:
    """A chain stopped between levels and restored from callback state continues with the same masks."""

    def chain(stop_after: int | None) -> dict:
        L.seed_everything(0)
        model, cb = Regressor(), PruningCallback(condition="mask/permuted", monitor="val/score", seed=3)
        for level in range(3):
            if level == stop_after:
                state = copy.deepcopy(cb.state_dict())
                model, cb = Regressor(), PruningCallback(condition="mask/permuted", monitor="val/score", seed=3)
                cb.load_state_dict(state)
            L.seed_everything(level)
            _fit(model, cb, epochs=1)
        return cb.masks

    straight, resumed = chain(None), chain(2)
    assert all(torch.equal(straight[n], resumed[n]) for n in straight)


def _ppo_fit(model, cb, probe=None) -> None:
    from lth.datamodules import OnPolicyDataModule

    dm = OnPolicyDataModule(
        "CartPole-v1", num_envs=2, rollout_steps=64, total_frames=512, eval_every=256, eval_episodes=2
    )
    callbacks = [cb] + ([probe] if probe else [])
    L.Trainer(
        max_epochs=1,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        val_check_interval=dm.eval_interval,
    ).fit(model, dm)


def test_ppo_manual_optimisation_and_torchrl_loss_params_stay_masked() -> None:
    from lth.modules import PPO

    L.seed_everything(0)
    model = PPO("CartPole-v1", actor_hidden=[16, 16], critic_hidden=[16, 16])
    cb = PruningCallback(modules=["actor"], seed=0)
    _ppo_fit(model, cb)
    assert cb.level == 1 and all(name.startswith("actor.") for name in cb.masks)
    probe = MaskProbe(cb)
    _ppo_fit(model, cb, probe)
    assert probe.checks == 4 and cb.level == 2
    loss_params = model.loss_module.actor_network_params.flatten_keys(".")
    for name, mask in cb.masks.items():
        shared = [v for v in loss_params.values() if v is dict(model.named_parameters())[name]]
        assert shared and torch.all(shared[0][~mask] == 0)  # the loss sees the very same, masked tensors


def test_reinit_draws_fresh_weights_with_the_modules_own_init_scheme() -> None:
    from lth.modules import PPO

    L.seed_everything(0)
    model = PPO("CartPole-v1", actor_hidden=[16, 16], critic_hidden=[16, 16], input_scale=0.1)
    first = "actor.module.0.module.0.weight"
    init = dict(model.named_parameters())[first].detach().clone()
    cb = PruningCallback(condition="random/reinit", seed=0)
    _ppo_fit(model, cb)
    fresh = dict(model.named_parameters())[first]
    assert not torch.equal(fresh[cb.masks[first]], init[cb.masks[first]])
    assert fresh.abs().max() <= 0.1 / 2  # kaiming bound 1/sqrt(4), times the 0.1 input-layer factor
