"""Our ``PruningCallback`` against Lightning's own ``ModelPruning``, on the four points docs/callback.md compares.

Each test runs both callbacks on the same tiny model and asserts what each one really does, so the docs
table rests on observed behaviour, and a test fails as soon as a Lightning (or TorchRL) release changes it:

1. a second fit of the same model with the same callback (IMP = one fit per level);
2. masks across a checkpoint save / load / resume;
3. whether biases get pruned;
4. a TorchRL ``ClipPPOLoss`` whose ``TensorDictParams`` hold the actor's parameters.

``ModelPruning`` is configured as its documentation suggests for lottery tickets: global L1 pruning of 20 %
per pruning step (``"l1_unstructured"``, ``amount=0.2``, ``use_global_unstructured=True``), rewinding on
(``use_lottery_ticket_hypothesis=True``, its default), and whichever of ``make_pruning_permanent``,
``prune_on_train_epoch_end`` and ``parameter_names`` gives it the best chance on the point at hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ModelPruning
from tensordict import TensorDict
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lth.callbacks import PruningCallback
from lth.callbacks.masks import count

WEIGHTS = ("net.0.weight", "net.2.weight", "net.4.weight")
BIASES = ("net.0.bias", "net.2.bias", "net.4.bias")
N_WEIGHTS = 4 * 16 + 16 * 16 + 16 * 1  # 336
N_BIASES = 16 + 16 + 1  # 33


class Tiny(L.LightningModule):
    """A 4-16-16-1 MLP regressor; validation logs ``val/score`` (higher is better)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/score", -nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    return DataLoader(TensorDataset(x, x @ torch.randn(4, 1, generator=g) + 0.1), batch_size=32)


def _fit(model: L.LightningModule, *callbacks: Callback, epochs: int = 1, ckpt_path: str | None = None) -> None:
    trainer = L.Trainer(
        max_epochs=epochs, callbacks=list(callbacks), logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(model, _loader(), _loader(), ckpt_path=ckpt_path)


def _lth_pruning(**kwargs: Any) -> ModelPruning:
    """``ModelPruning`` set up for lottery tickets: global L1, 20 % per step, rewinding to the weights at setup."""
    return ModelPruning("l1_unstructured", amount=0.2, use_global_unstructured=True,
                        use_lottery_ticket_hypothesis=True, **kwargs)


class Record(Callback):
    """Calls ``fn(pl_module)`` at one hook and keeps the results (placed after ``ModelPruning`` in the
    callback list, it sees the model after ``ModelPruning``'s own hook has run)."""

    def __init__(self, hook: str, fn: Callable[[L.LightningModule], Any]) -> None:
        self.hook, self.fn = hook, fn
        self.values: list[Any] = []

    def _maybe(self, hook: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hook == self.hook and not trainer.sanity_checking:
            self.values.append(self.fn(pl_module))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._maybe("on_train_batch_end", trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe("on_train_epoch_end", trainer, pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe("on_validation_epoch_start", trainer, pl_module)


def _masked_stay_zero(cb: PruningCallback) -> Record:
    """Records, after every optimizer step, how many weights pruned by ``cb`` are non-zero (must be 0)."""
    def nonzero_pruned(pl_module: L.LightningModule) -> int:
        params = dict(pl_module.named_parameters())
        return sum(int((params[n][~m] != 0).sum()) for n, m in cb.masks.items())
    return Record("on_train_batch_end", nonzero_pruned)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _zeros(tensors: list[Tensor]) -> int:
    return sum(int((t == 0).sum()) for t in tensors)


def _has_pruning_hooks(model: nn.Module) -> bool:
    return any(isinstance(h, torch.nn.utils.prune.BasePruningMethod)
               for m in model.modules() for h in m._forward_pre_hooks.values())


# ---------------------------------------------------------------------------------------------- 1. second fit
def test_second_fit_of_the_same_model_and_callback() -> None:
    """IMP is one fit per level with the same callback. Ours: level 2 prunes 20 % of the 269 survivors
    (336 -> 269 -> 215), keeps level-1 weights at zero throughout fit 2 and rewinds survivors to init.

    ``ModelPruning``, same instance, two ``Trainer(...).fit`` calls:

    - ``make_pruning_permanent=True`` (default): the masks are dropped at the end of fit 1, so fit 2 retrains
      the pruned weights to non-zero values and then prunes 20 % of *all* 336 weights (67), not of the 269
      survivors (54): no iterative pruning.
    - ``make_pruning_permanent=False``: fit 2 crashes in ``ModelPruning.setup`` (it deep-copies the module,
      whose re-parametrised ``weight`` is a non-leaf tensor).
    - ``make_pruning_permanent=False, prune_on_train_epoch_end=False`` (pruning under validation's no-grad):
      fit 2 runs and prunes iteratively (215 left), but "rewinds" survivors to the *trained* weights of fit 1
      (the stale ``weight`` attribute it deep-copied at setup), not to the initial weights.
    """
    # ours
    torch.manual_seed(0)
    model = Tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cb = PruningCallback(amount=0.2, monitor="val/score")
    _fit(model, cb)
    assert count(cb.masks) == 269
    probe = _masked_stay_zero(cb)
    _fit(model, cb, probe)
    assert cb.level == 2 and count(cb.masks) == 215 and set(cb.masks) == set(WEIGHTS)
    assert probe.values and set(probe.values) == {0}  # level-1 pruned weights stayed exactly 0 in fit 2
    state = model.state_dict()
    assert list(state) == list(init)  # plain keys
    for name, mask in cb.masks.items():
        assert torch.equal(state[name], init[name] * mask)  # survivors rewound to init, pruned exactly 0

    # ModelPruning, make_pruning_permanent=True (default)
    torch.manual_seed(0)
    model = Tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    mp = _lth_pruning(make_pruning_permanent=True, parameter_names=["weight"])
    _fit(model, mp)
    weights = [m.weight for m in _linears(model)]
    assert _zeros(weights) == 67  # 20 % of 336 pruned ...
    assert all(torch.equal(w[w != 0], init[n][w != 0]) for n, w in zip(WEIGHTS, weights))  # ... and rewound
    assert not _has_pruning_hooks(model) and not any(hasattr(m, "weight_mask") for m in _linears(model))
    pruned1 = [w == 0 for w in weights]
    regrown = Record("on_train_batch_end", lambda m: sum(
        int((lin.weight[p] != 0).sum()) for lin, p in zip(_linears(m), pruned1)))
    mask2 = Record("on_train_epoch_end", lambda m: _zeros([lin.weight_mask for lin in _linears(m)]))
    _fit(model, mp, regrown, mask2)
    assert regrown.values == [56, 59, 60, 60]  # level-1 pruned weights trained again from fit 2's first step
    assert mask2.values == [67]  # fit 2 prunes 20 % of all 336 weights, not 54 = 20 % of the 269 survivors
    assert not _has_pruning_hooks(model)  # and its masks are dropped again

    # ModelPruning, make_pruning_permanent=False: the second fit fails in setup
    torch.manual_seed(0)
    model = Tiny()
    mp = _lth_pruning(make_pruning_permanent=False, parameter_names=["weight"])
    _fit(model, mp)
    assert _zeros([lin.weight_mask for lin in _linears(model)]) == 67
    with pytest.raises(RuntimeError, match="Only Tensors created explicitly by the user .* deepcopy"):
        _fit(model, mp)

    # ModelPruning, make_pruning_permanent=False, pruning at validation end: iterative, but wrong rewind
    torch.manual_seed(0)
    model = Tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    mp = _lth_pruning(make_pruning_permanent=False, prune_on_train_epoch_end=False, parameter_names=["weight"])
    trained = Record("on_validation_epoch_start", lambda m: [lin.weight.detach().clone() for lin in _linears(m)])
    _fit(model, mp, trained)
    masks1 = [lin.weight_mask.clone() for lin in _linears(model)]
    assert all(torch.equal(lin.weight_orig, init[n]) for n, lin in zip(WEIGHTS, _linears(model)))  # fit 1 ok
    _fit(model, mp)
    assert _zeros([lin.weight_mask for lin in _linears(model)]) == N_WEIGHTS - 215  # iterative pruning works
    for lin, w1, m1, name in zip(_linears(model), trained.values[0], masks1, WEIGHTS):
        assert torch.equal(lin.weight_orig, w1 * m1)  # rewound to fit 1's trained weights ...
        assert not torch.equal(lin.weight_orig, init[name])  # ... not to the initial ones


# ---------------------------------------------------------------------------------------------- 2. checkpoints
def _every_epoch(tmp_path: Path) -> ModelCheckpoint:
    # saved at train-epoch end, i.e. after ModelPruning has pruned in that epoch (checkpoint callbacks run last)
    return ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True)


def test_checkpoints_keep_the_masks(tmp_path: Path) -> None:
    """Ours: a mid-fit checkpoint has plain keys with pruned weights at 0, loads into an unpruned copy, and a
    resumed fit (fresh model, fresh callback) keeps the pruned weights at exactly 0 and prunes as before.

    ``ModelPruning`` (2 epochs, pruning at each epoch end, checkpoint after epoch 0):

    - ``make_pruning_permanent=True`` (default): the checkpoint has plain keys, pruned weights at 0, and loads
      into an unpruned copy; but it holds no mask (the callback saves no state), so the resumed fit trains the
      pruned weights back to non-zero values, and its rewind goes to the fresh model's random weights.
    - ``make_pruning_permanent=False``: the checkpoint's keys are ``weight_orig`` / ``weight_mask``: it cannot
      be loaded into an unpruned copy, nor resumed into a fresh model.
    """
    # ours
    torch.manual_seed(0)
    model = Tiny()
    cb = PruningCallback(amount=0.2, monitor="val/score")
    _fit(model, cb)  # level 0 -> 1
    _fit(model, cb, _every_epoch(tmp_path / "ours"), epochs=2)  # trains level 1 (checkpoints), then prunes to 2
    saved = torch.load(tmp_path / "ours" / "epoch=0.ckpt", weights_only=False)
    assert list(saved["state_dict"]) == list(Tiny().state_dict())  # plain keys
    Tiny().load_state_dict(saved["state_dict"])  # loads into an unpruned copy
    masks1 = saved["callbacks"]["PruningCallback"]["masks"]
    assert count(masks1) == 269 and all(torch.all(saved["state_dict"][n][~m] == 0) for n, m in masks1.items())
    resumed = PruningCallback(amount=0.2, monitor="val/score")
    probe = _masked_stay_zero(resumed)
    torch.manual_seed(1)  # a fresh model with other random weights: everything must come from the checkpoint
    _fit(Tiny(), resumed, probe, epochs=2, ckpt_path=str(tmp_path / "ours" / "epoch=0.ckpt"))
    assert probe.values and set(probe.values) == {0}  # resumed epoch: pruned weights stayed exactly 0
    assert resumed.level == 2 and all(torch.equal(resumed.masks[n], cb.masks[n]) for n in cb.masks)

    # ModelPruning, make_pruning_permanent=True (default)
    torch.manual_seed(0)
    init = Tiny().state_dict()
    torch.manual_seed(0)
    mp = _lth_pruning(make_pruning_permanent=True, parameter_names=["weight"])
    _fit(Tiny(), mp, _every_epoch(tmp_path / "mp"), epochs=2)
    saved = torch.load(tmp_path / "mp" / "epoch=0.ckpt", weights_only=False)
    assert set(saved["state_dict"]) == set(Tiny().state_dict())  # plain keys ...
    Tiny().load_state_dict(saved["state_dict"])  # ... so it loads into an unpruned copy
    pruned = {n: saved["state_dict"][n] == 0 for n in WEIGHTS}
    assert sum(int(p.sum()) for p in pruned.values()) == 67  # pruned weights are 0 in the checkpoint ...
    assert not any("ModelPruning" in key for key in saved["callbacks"])  # ... but no mask is stored
    torch.manual_seed(1)
    fresh = Tiny()
    fresh_init = {k: v.clone() for k, v in fresh.state_dict().items()}
    regrown = Record("on_train_batch_end", lambda m: sum(
        int((dict(m.named_parameters())[n][p] != 0).sum()) for n, p in pruned.items()))
    mp = _lth_pruning(make_pruning_permanent=True, parameter_names=["weight"])
    _fit(fresh, mp, regrown, epochs=2, ckpt_path=str(tmp_path / "mp" / "epoch=0.ckpt"))
    assert regrown.values == [60, 60, 60, 60]  # the resumed epoch trains the pruned weights again
    state = fresh.state_dict()
    for n in WEIGHTS:
        alive = state[n] != 0
        assert torch.equal(state[n][alive], fresh_init[n][alive])  # rewound to the fresh model's random init
        assert not torch.equal(state[n][alive], init[n][alive])  # not to the run's initial weights

    # ModelPruning, make_pruning_permanent=False
    torch.manual_seed(0)
    mp = _lth_pruning(make_pruning_permanent=False, parameter_names=["weight"])
    _fit(Tiny(), mp, _every_epoch(tmp_path / "mp_np"), epochs=2)
    saved = torch.load(tmp_path / "mp_np" / "epoch=0.ckpt", weights_only=False)
    assert {k for k in saved["state_dict"] if k.startswith("net.0.")} == {
        "net.0.weight_orig", "net.0.weight_mask", "net.0.bias"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "net.0.weight"'):
        Tiny().load_state_dict(saved["state_dict"])
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "net.0.weight"'):
        _fit(Tiny(), _lth_pruning(make_pruning_permanent=False, parameter_names=["weight"]), epochs=2,
             ckpt_path=str(tmp_path / "mp_np" / "epoch=0.ckpt"))


# ---------------------------------------------------------------------------------------------- 3. biases
def test_biases_are_not_pruned() -> None:
    """Ours prunes Linear/Conv weights only; biases are never masked (they are rewound with the rest).

    ``ModelPruning`` with its default ``parameter_names=None`` (= ``("weight", "bias")``) ranks biases together
    with weights in the global L1 ranking and prunes some of them; with ``parameter_names=["weight"]`` it
    prunes weights only, so this one is a default, not a limitation.
    """
    # ours
    torch.manual_seed(0)
    model = Tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cb = PruningCallback(amount=0.2, monitor="val/score")
    _fit(model, cb)
    assert set(cb.masks) == set(WEIGHTS) and count(cb.masks) == 269
    assert all(torch.equal(model.state_dict()[n], init[n]) for n in BIASES)  # rewound, none zeroed

    # ModelPruning, default parameter_names (make_pruning_permanent=False to look at the masks)
    torch.manual_seed(0)
    model = Tiny()
    _fit(model, _lth_pruning(make_pruning_permanent=False))
    linears = _linears(model)
    assert all(hasattr(lin, "bias_mask") and hasattr(lin, "bias_orig") for lin in linears)
    assert [_zeros([lin.bias_mask]) for lin in linears] == [2, 1, 0]  # 3 of the 33 biases pruned
    assert _zeros([lin.weight_mask for lin in linears]) + _zeros([lin.bias_mask for lin in linears]) == round(
        0.2 * (N_WEIGHTS + N_BIASES))

    # ModelPruning, default parameter_names, make_pruning_permanent=True: the same biases are left at 0
    torch.manual_seed(0)
    model = Tiny()
    _fit(model, _lth_pruning(make_pruning_permanent=True))
    assert [_zeros([lin.bias]) for lin in _linears(model)] == [2, 1, 0]

    # ModelPruning, parameter_names=["weight"]: weights only
    torch.manual_seed(0)
    model = Tiny()
    _fit(model, _lth_pruning(make_pruning_permanent=False, parameter_names=["weight"]))
    assert not any(hasattr(lin, "bias_mask") for lin in _linears(model))
    assert _zeros([lin.weight_mask for lin in _linears(model)]) == 67


# ---------------------------------------------------------------------------------------------- 4. TorchRL losses
def _ppo_fit(model: L.LightningModule, *callbacks: Callback) -> None:
    """2 rollouts of 2 envs x 32 steps, a greedy evaluation (Lightning validation) after each."""
    from lth.datamodules import OnPolicyDataModule

    dm = OnPolicyDataModule("CartPole-v1", num_envs=2, rollout_steps=32, total_frames=128, eval_every=64,
                            eval_episodes=2)
    L.Trainer(max_epochs=1, callbacks=list(callbacks), logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
              val_check_interval=dm.eval_interval).fit(model, dm)


def _tiny_ppo() -> L.LightningModule:
    from lth.modules import PPO

    L.seed_everything(0)
    return PPO("CartPole-v1", actor_hidden=[16, 16], critic_hidden=[16, 16], epochs=1, minibatches=1)


def test_torchrl_loss_uses_the_masked_actor() -> None:
    """Ours masks the very Parameters that ``ClipPPOLoss.actor_network_params`` (TensorDictParams) holds, so
    every PPO update sees and keeps the pruned actor weights at exactly 0.

    ``ModelPruning`` on the actor's Linear weights: it moves each ``weight`` Parameter to ``weight_orig`` and
    recomputes ``weight = weight_orig * weight_mask`` in a forward pre-hook. The loss's TensorDictParams keep
    the old, unmasked Parameter (now ``weight_orig``) under ``weight``, and with ``ClipPPOLoss``'s default
    ``functional=True`` the first PPO update after pruning raises ``TypeError`` (the pre-hook assigns a
    tensor where ``to_module`` put that Parameter), whatever ``make_pruning_permanent`` is (masks are only made
    permanent at the end of the fit). Pruning only at the end of a fit avoids the crash because no update
    follows, and then point 1 applies. A loss built with ``functional=False`` calls the actor module itself:
    then ``ModelPruning`` works, and the loss sees the masked weights.
    """
    # ours
    model = _tiny_ppo()
    cb = PruningCallback(modules=["actor"], seed=0)
    _ppo_fit(model, cb)
    assert cb.level == 1 and all(name.startswith("actor.") for name in cb.masks)
    probe = _masked_stay_zero(cb)
    _ppo_fit(model, cb, probe)
    assert probe.values == [0, 0] and cb.level == 2
    params = dict(model.named_parameters())
    loss_params = model.loss_module.actor_network_params.flatten_keys(".")
    for name, mask in cb.masks.items():
        shared = [v for v in loss_params.values() if v is params[name]]
        assert len(shared) == 1 and torch.all(shared[0][~mask] == 0)  # the loss holds the same, masked tensor

    # ModelPruning, pruning at the first evaluation, then a second rollout to learn from
    model = _tiny_ppo()
    actor_linears = _linears(model.actor)
    mp = _lth_pruning(make_pruning_permanent=False, prune_on_train_epoch_end=False,
                      parameters_to_prune=[(lin, "weight") for lin in actor_linears])
    with pytest.raises(TypeError, match=r"cannot assign 'torch.FloatTensor' as parameter 'weight'") as error:
        _ppo_fit(model, mp)
    frames = [(Path(str(entry.path)).name, entry.name) for entry in error.traceback]
    assert ("ppo.py", "training_step") in frames and ("ppo.py", "_get_cur_log_prob") in frames  # in the loss
    first = actor_linears[0]
    assert _zeros([lin.weight_mask for lin in actor_linears]) == 70  # 20 % of the actor's 352 weights
    loss_params = model.loss_module.actor_network_params.flatten_keys(".")
    assert loss_params["module.0.module.0.weight"] is first.weight_orig  # the unmasked original
    pruned = first.weight_mask == 0
    assert torch.all(first.weight_orig.detach()[pruned] != 0)

    # ModelPruning with the loss rebuilt as ClipPPOLoss(functional=False): the fit runs, the loss sees the mask
    from torchrl.objectives import ClipPPOLoss

    model = _tiny_ppo()
    hp = model.hparams
    model.loss_module = ClipPPOLoss(model.actor, model.critic, clip_epsilon=hp.clip_epsilon,
                                    entropy_coeff=hp.entropy_coef, critic_coeff=hp.value_coef,
                                    loss_critic_type="l2", normalize_advantage=False, functional=False)
    actor_linears = _linears(model.actor)
    mp = _lth_pruning(make_pruning_permanent=False, prune_on_train_epoch_end=False,
                      parameters_to_prune=[(lin, "weight") for lin in actor_linears])
    _ppo_fit(model, mp)  # prunes after each of the 2 rollouts: 20 % of 352, then 20 % of the remaining 282
    assert _zeros([lin.weight_mask for lin in actor_linears]) == 70 + 56
    obs = torch.randn(1, 32, 4, generator=torch.Generator().manual_seed(1))  # a population of one
    with torch.no_grad():
        batch = model.actor(TensorDict({"observation": obs}, [1, 32]))
    batch["advantage"], batch["value_target"] = torch.randn(1, 32, 1), torch.randn(1, 32, 1)
    model.zero_grad()
    out = model.loss_module(batch)
    out["loss_objective"].backward()
    entropy = torch.distributions.Categorical(logits=batch["logits"]).entropy().mean()
    assert torch.allclose(out["entropy"], entropy)  # the loss's policy is the masked actor
    for lin in actor_linears:
        assert torch.all(lin.weight_orig.grad[lin.weight_mask == 0] == 0)  # no gradient to pruned weights
