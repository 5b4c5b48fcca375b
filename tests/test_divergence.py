"""Divergence is a result, not a crash: a non-finite loss or weights stop the fit cleanly, the level is tagged and
keeps its best return so far, the chain goes on, and magnitude pruning ranks NaN/inf weights as the smallest."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow import MlflowClient
from torchrl.objectives import ClipPPOLoss, DQNLoss

from lth.callbacks import PruningCallback
from lth.callbacks.masks import full_masks, global_magnitude_masks
from lth.cli import main
from lth.datamodules import ReplayDataModule, onpolicy
from lth.modules import DQN, base
from tests.conftest import local_store
from tests.test_imp import TINY, _chains, _levels, _ticket

NAN = float("nan")


def test_magnitude_pruning_ranks_nan_and_inf_weights_below_every_finite_one() -> None:
    inf = float("inf")
    weights = {"a": torch.tensor([[0.5, NAN], [-3.0, 0.01]]), "b": torch.tensor([inf, -2.0, -inf, 0.2])}
    masks = full_masks(weights)
    masks["b"][3] = False  # already pruned: not counted, not revived
    # 7 surviving weights, round(0.5 * 7) = 4 removed: the three non-finite ones, then the smallest finite |w| (0.01)
    new = global_magnitude_masks(weights, masks, 0.5)
    assert new["a"].tolist() == [[True, False], [True, False]]
    assert new["b"].tolist() == [False, True, False, False]
    # fewer removed than non-finite: they go first, by position (a's NaN, then b's +inf)
    new = global_magnitude_masks(weights, masks, 0.25)  # round(0.25 * 7) = 2
    assert new["a"].tolist() == [[True, False], [True, True]]
    assert new["b"].tolist() == [False, True, True, False]
    # all-finite weights rank exactly as by |w|
    finite = {"a": torch.tensor([[0.5, 0.4], [-3.0, 0.01]]), "b": torch.tensor([0.3, -2.0, 0.02, 0.2])}
    assert global_magnitude_masks(finite, masks, 0.5)["a"].tolist() == [[True, False], [True, False]]
    assert global_magnitude_masks(finite, masks, 0.5)["b"].tolist() == [False, True, False, False]


class _NanAtCall:
    """Wraps a TorchRL loss's forward: call number ``at`` (1-based) returns a NaN in ``key``."""

    def __init__(self, real, at: int, key: str) -> None:
        self.real, self.at, self.key, self.calls = real, at, key, 0

    def __call__(self, module, *args, **kwargs):
        out = self.real(module, *args, **kwargs)
        self.calls += 1
        if self.calls == self.at:
            out.set(self.key, out.get(self.key) * NAN)
        return out


def _counting_rollouts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the rollouts each fit's collector produced (one list entry per fit)."""
    per_fit: list[int] = []
    real_iter = onpolicy.RolloutStream.__iter__

    def counted(self):
        per_fit.append(0)
        for rollout in real_iter(self):
            per_fit[-1] += 1
            yield rollout

    monkeypatch.setattr(onpolicy.RolloutStream, "__iter__", counted)
    return per_fit


def test_nan_loss_mid_level_stops_the_level_keeps_its_best_return_and_the_chain_continues(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # 4 rollouts of 512 frames per level, evaluated after each; PPO makes 4 epochs x 4 minibatches = 16 updates per
    # rollout, so loss call 37 is the 5th update of the 3rd rollout: divergence at 1536 frames, after 2 evaluations.
    nan = _NanAtCall(ClipPPOLoss.forward, at=37, key="loss_critic")
    monkeypatch.setattr(ClipPPOLoss, "forward", lambda self, *a, **k: nan(self, *a, **k))
    rollouts = _counting_rollouts(monkeypatch)
    main(["imp", *TINY, "--data.init_args.total_frames", "2048", "--imp.levels", "2", "--seeds", "5"])
    out = capsys.readouterr().out
    assert "level 0: density 1.000" in out and "(training diverged at 1536 frames" in out
    assert rollouts == [3, 4]  # the stopped level fetched no 4th rollout: no collector acted after divergence

    client = MlflowClient(local_store())
    parent = _chains(client, "CartPole-v1/ppo/mlp64x64")["mask/weights"]
    levels = _levels(client, parent)
    assert sorted(levels) == [0, 1]
    diverged, clean = levels[0], levels[1]
    assert diverged.data.tags["diverged"] == "true" and "diverged" not in clean.data.tags
    assert [(m.step, m.value) for m in client.get_metric_history(diverged.info.run_id, "diverged_at_frames")] == [
        (1536, 1536.0)]
    evals = client.get_metric_history(diverged.info.run_id, "eval/return")
    assert [m.step for m in evals] == [512, 1024]  # nothing evaluated after divergence
    assert diverged.data.metrics["ticket/best_return"] == max(m.value for m in evals)
    assert [m.step for m in client.get_metric_history(clean.info.run_id, "eval/return")] == [512, 1024, 1536, 2048]

    ticket = _ticket(parent, clean)  # level 1: pruned from level 0's best (pre-divergence, finite) weights
    kept = sum(int(m.sum()) for m in ticket["masks"].values())
    total = sum(m.numel() for m in ticket["masks"].values())
    assert kept == total - round(0.2 * total)
    assert all(torch.isfinite(v).all() for v in ticket["rewind_state"].values())


def test_huge_learning_rate_levels_are_tagged_and_the_chain_prunes_from_the_last_good_weights(
    in_tmp: Path, capsys
) -> None:
    # lr 1e38: one Adam step moves every weight by ~1e38 (finite, but its forward passes overflow to inf/NaN, and
    # TorchRL's loss and sampling raise on those); the step is undone and the level stops at its first rollout.
    main(["imp", *TINY, "--model.init_args.lr", "1e38", "--imp.levels", "2", "--imp.prune_from", "last"])
    out = capsys.readouterr().out
    assert out.count("(training diverged at 512 frames") == 2
    assert "| 0 | 1.000 | nan |" in out  # no evaluation before divergence: no score

    client = MlflowClient(local_store())
    parent = _chains(client, "CartPole-v1/ppo/mlp64x64")["mask/weights"]
    levels = _levels(client, parent)
    assert sorted(levels) == [0, 1]
    for run in levels.values():
        assert run.data.tags["diverged"] == "true" and run.data.tags["lth.level_complete"] == "true"
        assert run.data.metrics["diverged_at_frames"] == 512
        assert math.isnan(run.data.metrics["ticket/best_return"])
        assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "density")] == [0, 1]
    # The diverging step was undone, so the last good weights of level 0 are its starting (init) weights: level 1's
    # masks are exactly the magnitude masks of those, and every stored weight is finite.
    level0, level1 = _ticket(parent, levels[0]), _ticket(parent, levels[1])
    init = {n: level0["rewind_state"][n] for n in level0["masks"]}
    expected = global_magnitude_masks(init, level0["masks"], 0.2)
    assert all(torch.equal(level1["masks"][n], expected[n]) for n in expected)
    assert all(torch.isfinite(v).all() for t in (level0, level1) for v in t["rewind_state"].values())


def test_dqn_stops_at_the_diverging_update_without_fetching_another_minibatch(monkeypatch: pytest.MonkeyPatch) -> None:
    # 32 frames per collection, 4 updates each once 256 warmup frames are in: updates 9-12 come at 352 frames.
    nan = _NanAtCall(DQNLoss.forward, at=10, key="loss")
    monkeypatch.setattr(DQNLoss, "forward", lambda self, *a, **k: nan(self, *a, **k))
    steps = []
    real_step = DQN.training_step

    def counted_step(self, batch, batch_idx):
        steps.append(batch_idx)
        real_step(self, batch, batch_idx)

    monkeypatch.setattr(DQN, "training_step", counted_step)
    evaluations = []
    real_eval = base.evaluate_episodes

    def spied_eval(env, policy):
        evaluations.append(real_eval(env, policy))
        return evaluations[-1]

    monkeypatch.setattr(base, "evaluate_episodes", spied_eval)

    L.seed_everything(0)
    model = DQN("CartPole-v1", hidden=[16])
    pruning = PruningCallback(amount=0.2)
    dm = ReplayDataModule("CartPole-v1", num_envs=4, collect_steps=8, total_frames=640, buffer_size=1_000,
                          batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=32, eval_episodes=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval,
                        callbacks=[pruning])
    with pytest.warns(UserWarning, match="training diverged at 352 env frames"):
        trainer.fit(model, dm)

    assert model.member_diverged_at == [352] and model.frames == 352
    assert len(steps) == 10  # the 10th minibatch diverged; no 11th was fetched (48 were due)
    assert len(evaluations) == 2  # after updates 4 and 8; none after divergence
    assert model.best_returns[0].item() == max(r.mean().item() for r in evaluations)
    assert math.isfinite(trainer.train_dataloader.buffers[0].sampler._max_priority[0])  # no NaN priority written
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert pruning.level == 1 and all(torch.isfinite(w).all() for w in pruning.rewind_state.values())
    kept = sum(int(m.sum()) for m in pruning.masks.values())
    assert kept == 4 * 16 + 16 * 2 - round(0.2 * (4 * 16 + 16 * 2))


def test_categorical_acting_with_non_finite_logits_acts_uniformly_and_reports_nan_log_probs() -> None:
    from tensordict import TensorDict
    from torchrl.envs import ExplorationType, set_exploration_type

    from lth.rl.agents import CategoricalActing

    class Net(torch.nn.Module):  # logits of a diverged network for observations whose first input is not 0
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return torch.where(obs[..., :1] != 0, NAN, torch.tensor([0.0, 1.0, 0.0, -1.0]))  # obs [1, N, 3]

    net = Net()
    obs = torch.zeros(2000, 3)
    obs[:1000, 0] = 1.0
    with set_exploration_type(ExplorationType.RANDOM):
        out = CategoricalActing(net)(TensorDict({"observation": obs}, [2000]))
    diverged, fine = out["action_log_prob"][:1000], out["action_log_prob"][1000:]
    assert diverged.isnan().all() and torch.isfinite(fine).all()
    counts = torch.bincount(out["action"][:1000], minlength=4).float() / 1000
    assert torch.all((counts - 0.25).abs() < 0.06)


def test_pruning_callback_never_keeps_weights_with_nan_as_its_best() -> None:
    from types import SimpleNamespace

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    pruning = PruningCallback(amount=0.5)
    pruning._discover(model)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"eval/return": torch.tensor(10.0)})
    pruning.on_validation_end(trainer, model)
    kept = {n: w.clone() for n, w in pruning.member_state_dict(0)["best_weights"].items()}
    with torch.no_grad():
        model[0].weight[0, 0] = NAN
    trainer.callback_metrics["eval/return"] = torch.tensor(20.0)  # a better score, but from broken weights
    pruning.on_validation_end(trainer, model)
    state = pruning.member_state_dict(0)
    assert state["best_score"] == 10.0 and kept
    assert all(torch.equal(kept[n], state["best_weights"][n]) for n in kept)


@pytest.mark.parametrize(("algo", "lr", "why"), [
    ("dqn", 1e38, "the weights after the step are not finite"),  # one Adam step overflows the weights' norm
    ("dqn", 1e13, "an output is not finite"),  # finite weights, but squared TD errors (the priorities) overflow
    ("ppo", 1e13, "a network output is not finite"),  # ReLU actor logits overflow: TorchRL's loss would raise
])
def test_huge_learning_rates_end_the_fit_cleanly_for_every_failure_mode(algo: str, lr: float, why: str) -> None:
    from lth.datamodules import OnPolicyDataModule
    from lth.modules import PPO

    L.seed_everything(0)
    if algo == "dqn":
        model = DQN("CartPole-v1", hidden=[16], lr=lr)
        dm = ReplayDataModule("CartPole-v1", num_envs=4, collect_steps=8, total_frames=640, buffer_size=1_000,
                              batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=32, eval_episodes=2)
    else:
        model = PPO("CartPole-v1", actor_hidden=[64, 64], critic_hidden=[64, 64], network={"activation": "relu"},
                    lr=lr)
        dm = OnPolicyDataModule("CartPole-v1", rollout_steps=64, total_frames=1024, eval_every=256, eval_episodes=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval)
    with pytest.warns(UserWarning, match=f"training diverged at {256 + 32 if algo == 'dqn' else 256} env frames "
                      rf"\({why}\)"):
        trainer.fit(model, dm)
    assert model.diverged and all(torch.isfinite(p).all() for p in model.parameters())
    assert model.best_returns[0].item() == -math.inf  # it diverged before its first evaluation


def test_a_population_member_whose_step_overflows_is_put_back_before_that_step() -> None:
    """Per member, what a solo agent does: the step whose weights overflow (lr 1e38) is undone, so every member
    ends with finite weights, and the fit stops once all have diverged."""
    L.seed_everything(0)
    model = DQN("CartPole-v1", hidden=[16], lr=1e38, members=2)
    dm = ReplayDataModule("CartPole-v1", num_envs=4, collect_steps=8, total_frames=640, buffer_size=1_000,
                          batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=32, eval_episodes=2, seed=[0, 1])
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval)
    with pytest.warns(UserWarning, match=r"member 1: training diverged at \d+ env frames \(the weights after the step"):
        trainer.fit(model, dm)
    assert bool(model.diverged_members().all()) and model.diverged
    assert all(torch.isfinite(p).all() for p in model.parameters())
