"""PruningCallback in real fits: supervised (automatic optimisation) and PPO (manual, TorchRL losses); pruning
from the best or last weights against masks worked out by hand; each of the two masking mechanisms (gradient
hook, re-zero after the optimizer step) shown necessary with optimizers carried across prunes, restored from
checkpoints and evaluating closures."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from lth.callbacks import PruningCallback
from lth.callbacks.masks import count


class Regressor(L.LightningModule):
    """A plain supervised module; validation logs a score that the callback can monitor."""

    def __init__(
        self, optimizer: str = "adam", keep_optimizer: bool = False, scores: list[float] | None = None
    ) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.keep_optimizer = keep_optimizer  # one optimizer, its state carried across fits (and so across prunes)
        self.scores = scores  # logged as val/score at each epoch instead of the real one
        self._optimizer: torch.optim.Optimizer | None = None
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        score = -nn.functional.mse_loss(self.net(x), y)
        self.log("val/score", score if self.scores is None else torch.tensor(self.scores[self.current_epoch]))

    def configure_optimizers(self):
        if self.keep_optimizer and self._optimizer is not None:
            return self._optimizer
        params = self.parameters()
        self._optimizer = {
            "adam": lambda: torch.optim.Adam(params, lr=1e-2),
            "adamw": lambda: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
            "sgd": lambda: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
            "lbfgs": lambda: torch.optim.LBFGS(params, lr=0.5, max_iter=5),
        }[self.optimizer]()
        return self._optimizer


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


class ForwardProbe(Callback):
    """Checks that every pruned weight is exactly zero in every forward pass (called after each training_step,
    before its backward: inside an LBFGS step that is every closure evaluation)."""

    def __init__(self, cb: PruningCallback) -> None:
        self.cb, self.checks = cb, 0

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        params = dict(pl_module.named_parameters())
        for name, mask in self.cb.masks.items():
            assert torch.all(params[name][~mask] == 0), name
        self.checks += 1


class GradProbe(Callback):
    """Checks before every optimizer step that no pruned weight has a gradient."""

    def __init__(self, cb: PruningCallback) -> None:
        self.cb, self.checks = cb, 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = dict(pl_module.named_parameters())
        for name, mask in self.cb.masks.items():
            assert torch.all(params[name].grad[~mask] == 0), name
        self.checks += 1


def _fit(model, cb, *extra, epochs: int = 2, ckpt_path: str | None = None, loader=None) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[cb, *extra],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(extra and isinstance(extra[0], ModelCheckpoint)),
        num_sanity_val_steps=0,
    )
    loader = loader or _loader()
    trainer.fit(model, loader, loader, ckpt_path=ckpt_path)
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


@pytest.mark.parametrize("condition", ["random/reinit", "permuted/permuted"])
def test_each_level_draws_anew_and_the_same_seed_draws_the_same(condition: str) -> None:
    """The random draws of a level come from a generator of (seed, level): a level's mask is not the previous
    level's draw continued (which would nest it inside that mask), and the same seed repeats every level exactly."""

    def chain(seed: int) -> list[dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model, cb = Regressor(), PruningCallback(amount=0.2, monitor="val/score", condition=condition, seed=seed)
        levels = []
        for _ in range(3):
            _fit(model, cb, epochs=1)
            levels.append({n: m.clone() for n, m in cb.masks.items()})
        return levels

    first, again, other = chain(1), chain(1), chain(2)
    for one, two in zip(first, first[1:]):  # some weight dead at a level is alive again at the next one
        assert any(bool((two[n] & ~one[n]).any()) for n in one)
    assert all(torch.equal(a[n], b[n]) for a, b in zip(first, again) for n in a)
    assert not all(torch.equal(a[n], b[n]) for a, b in zip(first, other) for n in a)


class Scripted(L.LightningModule):
    """One bias-free Linear(8, 1) whose weights after each epoch (one step) and validation score follow a script."""

    def __init__(self, weights: list[list[float]], scores: list[float]) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 1, bias=False)
        self.weights, self.scores = weights, scores

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def on_train_batch_end(self, *args) -> None:
        with torch.no_grad():
            self.layer.weight.copy_(torch.tensor([self.weights[self.current_epoch]]))

    def validation_step(self, batch, batch_idx):
        self.log("score", torch.tensor(self.scores[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


SCRIPT = [
    [1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0],
    [-8.0, 7.0, -6.0, 5.0, -4.0, 3.0, -2.0, 1.0],
    [1.0, -8.0, 2.0, -7.0, 3.0, -6.0, 4.0, -5.0],
]
T, F = True, False


@pytest.mark.parametrize(
    ("prune_from", "mode", "scores", "expected"),
    [
        ("best", "max", [0.1, 0.9, 0.3], [T, T, T, T, F, F, F, F]),  # peaks at epoch 1, then drops
        ("best", "min", [0.5, 0.9, 0.7], [F, F, F, F, T, T, T, T]),  # lowest at epoch 0
        ("best", "min", [0.9, 0.1, 0.3], [T, T, T, T, F, F, F, F]),
        ("last", "max", [0.1, 0.9, 0.3], [F, T, F, T, F, T, F, T]),
        ("best", "max", [0.9, 0.9, 0.3], [F, F, F, F, T, T, T, T]),  # a tie keeps the earlier best (epoch 0)
        ("best", "min", [0.5, 0.5, 0.9], [F, F, F, F, T, T, T, T]),
    ],
)
def test_prunes_from_the_best_or_last_weights_by_hand(prune_from, mode, scores, expected) -> None:
    """Half of 8 weights pruned by |w| from the scripted weights of the chosen epoch; masks worked out by hand."""
    loader = DataLoader(TensorDataset(torch.randn(4, 8), torch.zeros(4, 1)), batch_size=4)  # one step per epoch
    model = Scripted(SCRIPT, scores)
    cb = PruningCallback(amount=0.5, monitor="score", mode=mode, prune_from=prune_from)
    _fit(model, cb, epochs=3, loader=loader)
    assert cb.masks["layer.weight"][0].tolist() == expected


def test_prunes_from_the_best_validated_weights_of_a_real_fit() -> None:
    """A real fit whose monitored score peaks at epoch 1 and then drops; torch's own global pruning of the
    weights recorded at that validation is the oracle, and it differs from pruning the last weights."""

    class Snapshot(Callback):
        def __init__(self):
            self.weights = []

        def on_validation_end(self, trainer, pl_module):
            self.weights.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def torch_masks(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        layers = {f"net.{i}.weight": nn.Linear(1, 1) for i in (0, 2, 4)}
        for name, layer in layers.items():
            layer.weight = nn.Parameter(state[name].clone())
        total = sum(state[n].numel() for n in layers)
        prune.global_unstructured([(m, "weight") for m in layers.values()], pruning_method=prune.L1Unstructured,
                                  amount=round(0.2 * total))
        return {name: layer.weight_mask.bool() for name, layer in layers.items()}

    model = Regressor("sgd", scores=[1.0, 3.0, 2.0, 0.0])
    cb = PruningCallback(monitor="val/score")
    snap = Snapshot()
    _fit(model, cb, snap, epochs=4)
    best, last = torch_masks(snap.weights[1]), torch_masks(snap.weights[-1])
    assert any(not torch.equal(best[n], last[n]) for n in best)
    assert all(torch.equal(cb.masks[n], best[n]) for n in best)


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


class _BeforePruning(Callback):
    """The callback's member-0 state and weights when training ends, before ``on_fit_end`` prunes."""

    def __init__(self, cb: PruningCallback) -> None:
        self.cb, self.fit = cb, None

    def on_train_end(self, trainer, pl_module) -> None:
        self.fit = (copy.deepcopy(self.cb.member_state_dict(0)), self.cb.member_weights(0))


@pytest.mark.parametrize(("condition", "prune_from"), [("permuted/permuted", "last"), ("random/reinit", "best")])
def test_prune_members_ends_a_fit_that_ran_elsewhere_as_the_fit_itself_would(condition: str, prune_from: str) -> None:
    """One dense fit shared by several conditions (lth imp's level 0): a condition's callback given that fit
    (watched by a callback of another condition) prunes and rewinds exactly as if it had watched the fit itself."""
    def fitted(cb: PruningCallback, *extra: Callback) -> Regressor:
        L.seed_everything(0)
        model = Regressor()
        _fit(model, cb, *extra, epochs=2)
        return model

    own = PruningCallback(condition=condition, monitor="val/score", seed=3, prune_from=prune_from)
    direct = fitted(own)
    other = PruningCallback(condition="mask/weights", monitor="val/score", seed=3, prune_from=prune_from)
    before = _BeforePruning(other)
    fitted(before, other)  # before runs first: it sees the fit's end before other prunes
    L.seed_everything(1)
    elsewhere = Regressor()
    adopted = PruningCallback(condition=condition, monitor="val/score", seed=3, prune_from=prune_from)
    adopted.prune_members(elsewhere, {0: before.fit})
    assert adopted.level == own.level == 1
    for name in own.masks:
        assert torch.equal(adopted.masks[name], own.masks[name]), name
    expected, got = own.member_state_dict(0), adopted.member_state_dict(0)
    for part in ("rewind_state", "start_state"):
        assert all(torch.equal(expected[part][n], got[part][n]) for n in expected[part]), part
    assert all(torch.equal(a, b) for a, b in zip(direct.parameters(), elsewhere.parameters(), strict=True))


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
    from lth.rl.networks import NetworkSpec

    L.seed_everything(0)
    model = PPO("CartPole-v1", actor_hidden=[16, 16], critic_hidden=[16, 16], network=NetworkSpec(input_scale=0.1))
    first = "actor.module.0.module.0.weight"
    init = dict(model.named_parameters())[first].detach().clone()
    cb = PruningCallback(condition="random/reinit", seed=0)
    _ppo_fit(model, cb)
    fresh = dict(model.named_parameters())[first]
    assert not torch.equal(fresh[cb.masks[first]], init[cb.masks[first]])
    assert fresh.abs().max() <= 0.1 / 2  # kaiming bound 1/sqrt(4), times the 0.1 input-layer factor


# ---------------------------------------------------------------------- each masking mechanism is needed
# A fresh optimizer per level hides both: with zero gradients on pruned weights a fresh optimizer never moves
# them. These cases are the ones where only one of the two mechanisms protects the mask.


def _moments(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> list[torch.Tensor]:
    state = optimizer.state[param]
    return [state[k] for k in ("momentum_buffer", "exp_avg", "exp_avg_sq") if state.get(k) is not None]


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_pruned_weights_stay_zero_with_an_optimizer_carried_across_a_prune(optimizer: str) -> None:
    """Momentum / Adam moments carried over from the dense fit keep moving newly pruned weights despite their
    zero gradients: only the re-zero after each optimizer step keeps them at 0."""
    model = Regressor(optimizer, keep_optimizer=True)
    cb = PruningCallback(monitor="val/score")
    _fit(model, cb)
    params = dict(model.named_parameters())
    carried = [m[~cb.masks[n]] for n in cb.masks for m in _moments(model._optimizer, params[n])]
    assert carried and all(bool(c.ne(0).any()) for c in carried)  # the premise: state at pruned weights is not 0
    probe = MaskProbe(cb)
    _fit(model, cb, probe, GradProbe(cb))
    assert probe.checks == 16 and model._optimizer is not None


def test_the_optimizer_state_of_pruned_weights_stays_zero() -> None:
    """With a fresh optimizer per level, pruned weights get no gradient, so Adam's moments for them stay 0."""

    class StateProbe(Callback):  # at the end of training, before the callback prunes the next level
        def on_train_end(self, trainer, pl_module):
            params = dict(pl_module.named_parameters())
            for name, mask in cb.masks.items():
                moments = _moments(trainer.optimizers[0], params[name])
                assert len(moments) == 2 and all(torch.all(m[~mask] == 0) for m in moments), name
                assert all(bool(m[mask].ne(0).any()) for m in moments), name
            self.checked = True

    model = Regressor("adam")
    cb = PruningCallback(monitor="val/score")
    _fit(model, cb)
    grads, state = GradProbe(cb), StateProbe()
    _fit(model, cb, grads, state, epochs=1)
    assert grads.checks == 8 and state.checked


def test_a_closure_optimizer_sees_zero_pruned_weights_in_every_forward_pass() -> None:
    """LBFGS evaluates its closure several times inside one ``step``; the step post-hook runs only after it,
    so only zero gradients on pruned weights keep them at 0 in those forward passes."""
    model = Regressor("lbfgs")
    cb = PruningCallback(monitor="val/score")
    _fit(model, cb, epochs=1)
    forward, after = ForwardProbe(cb), MaskProbe(cb)
    _fit(model, cb, forward, after, epochs=1)
    assert forward.checks > after.checks == 8  # more forward passes than steps: the closure ran inside steps


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_pruned_weights_stay_zero_when_resumed_from_a_checkpoint(tmp_path, optimizer: str) -> None:
    """A level resumed from a Lightning checkpoint, optimizer state restored: the resumed fit re-installs both
    mechanisms with the restored masks. Adam's state was carried across the prune, so it is nonzero at pruned
    weights (needs the re-zero); LBFGS evaluates its closure inside a step (needs the gradient hook)."""
    keep = optimizer == "adam"
    model = Regressor(optimizer, keep_optimizer=keep)
    cb = PruningCallback(monitor="val/score")
    _fit(model, cb)  # level 0 -> 1
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="level1-{epoch}", save_top_k=-1)
    _fit(model, cb, ckpt, epochs=1)  # one epoch of level 1, saved before it prunes to level 2
    saved = torch.load(tmp_path / "level1-epoch=0.ckpt", weights_only=False)
    assert saved["callbacks"]["PruningCallback"]["level"] == 1 and saved["optimizer_states"][0]["state"]
    if keep:
        masks = saved["callbacks"]["PruningCallback"]["masks"]
        moments = saved["optimizer_states"][0]["state"][0]["exp_avg"]  # net.0.weight
        assert bool(moments[~masks["net.0.weight"]].ne(0).any())  # the premise: restored state moves pruned weights

    resumed_cb = PruningCallback(monitor="val/score")
    probes = [MaskProbe(resumed_cb), ForwardProbe(resumed_cb), GradProbe(resumed_cb)]
    _fit(Regressor(optimizer, keep_optimizer=keep), resumed_cb, *probes, epochs=3,
         ckpt_path=str(tmp_path / "level1-epoch=0.ckpt"))
    assert resumed_cb.level == 2 and probes[0].checks == 16 and probes[1].checks >= 16 and probes[2].checks >= 16
