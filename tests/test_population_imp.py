"""``lth imp`` with populations: a 2-seed x 2-condition study trains as one population and resumes after SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import torch
from mlflow import MlflowClient

from lth.cli import main
from lth.store.chain_store import ChainStore
from tests.conftest import child_env, local_store
from tests.test_imp import TINY

STUDY = [*TINY, "--imp.levels", "3", "--imp.conditions", "mask/weights,random/reinit", "--seeds", "0,1"]


def _chains(client: MlflowClient, experiment: str) -> dict[tuple[str, str], object]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`lth.role` = 'chain'")
    keys = [(run.data.tags["condition"], run.data.tags["seed"]) for run in runs]
    assert len(set(keys)) == len(keys), keys  # one parent run per chain
    return dict(zip(keys, runs, strict=True))


def _children(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def _masks(client: MlflowClient, experiment: str) -> dict[tuple[str, str, int], dict[str, torch.Tensor]]:
    out = {}
    for key, parent in _chains(client, experiment).items():
        store = ChainStore(local_store(), parent.info.experiment_id, parent.info.run_id)
        children = _children(client, parent)
        levels = sorted(int(run.data.tags["level"]) for run in children)
        assert levels == [0, 1, 2], (key, levels)  # no duplicate, unfinished or half-written level runs
        assert all(run.info.status == "FINISHED" for run in children)
        for run in children:
            out[(*key, int(run.data.tags["level"]))] = store.load(run.info.run_id, "ticket.pt")["masks"]
    return out


def test_a_population_killed_with_sigkill_resumes_to_the_masks_of_an_uninterrupted_run(in_tmp: Path, capsys) -> None:
    main(["imp", *STUDY, "--trainer.logger.init_args.experiment_name", "straight"])
    out = capsys.readouterr().out
    assert out.count("level 2:") == 4
    client = MlflowClient(local_store())
    levels = client.search_runs([client.get_experiment_by_name("straight").experiment_id], "tags.level = '0'")
    # level 0: one dense fit per seed, a population of the two seeds; later levels: all four chains in one
    assert len({run.data.tags["lth.population"] for run in levels}) == 1
    assert {run.data.tags["lth.population.size"] for run in levels} == {"2"}
    later = client.search_runs([client.get_experiment_by_name("straight").experiment_id], "tags.level = '1'")
    assert {run.data.tags["lth.population.size"] for run in later} == {"4"}
    for run in levels:  # each member's params read like a solo chain's: its own seed, one member
        assert (run.data.params["seed"], run.data.params["members"]) == (run.data.tags["seed"], "1")

    straight = _masks(client, "straight")
    assert len(straight) == 12
    for level in (0, 1):  # level 0: the members ahead retrain from their initial weights (no stored state before)
        killed = [*STUDY, "--trainer.logger.init_args.experiment_name", f"killed at level {level}"]
        code = f"from lth.cli import main; main({['imp', *killed]!r})"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=child_env(PYTHONUNBUFFERED="1"))
        for line in proc.stdout:  # kill as soon as the first member has recorded the level, mid-way through the others
            if f"level {level}:" in line:
                proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(timeout=300) == -signal.SIGKILL
        main(["imp", *killed])
        resumed = _masks(client, f"killed at level {level}")
        assert straight.keys() == resumed.keys()
        for key, masks in straight.items():
            assert all(torch.equal(masks[name], resumed[key][name]) for name in masks), (level, key)
    # same seed, different conditions: the same dense level 0 (each member acts and shuffles with its own
    # seed's generator); different seeds: different agents
    best = {(r.data.tags["condition"], r.data.tags["seed"]): r.data.metrics["ticket/best_return"] for r in levels}
    assert best[("mask/weights", "0")] == best[("random/reinit", "0")]
    assert best[("mask/weights", "1")] == best[("random/reinit", "1")]
    first = straight[("mask/weights", "0", 1)]
    assert not all(torch.equal(first[n], straight[("mask/weights", "1", 1)][n]) for n in first)


def test_populations_are_as_large_as_asked_or_as_replay_buffers_fit_in_memory(monkeypatch) -> None:
    from types import SimpleNamespace

    import lth.study.population
    from lth.modules import PPO
    from lth.study.chains import Study
    from lth.study.population import population_size
    from lth.study.settings import ImpSettings

    def study(buffer_size: int, population: int | None = None) -> Study:
        data = SimpleNamespace(hparams={"buffer_size": buffer_size} if buffer_size else {})
        return Study(PPO(), data, {}, "sqlite:///x.db", "x", [0, 1, 2, 3, 4], {}, population=population)

    monkeypatch.setattr(lth.study.population, "available_memory", lambda: 10 * 2**30)
    settings = ImpSettings(conditions="all")
    assert population_size(study(0), settings, 20) == 20  # on-policy data: every chain
    assert population_size(study(0, population=6), settings, 20) == 6
    per_member = (2 * 4 * 4 + 64) * 10_000_000  # CartPole observations, 10M transitions: 0.9 GiB per member
    assert population_size(study(10_000_000), settings, 20) == int(5 * 2**30 // per_member) == 5
    assert population_size(study(10_000_000, population=8), settings, 20) == 8  # asked for: the user's call
    assert population_size(study(0), ImpSettings(branch_from="abc"), 20) == 1  # masks from a stored chain


def _seed_chains(client: MlflowClient, experiment: str) -> dict[int, ChainStore]:
    exp = client.get_experiment_by_name(experiment)
    return {int(run.data.tags["seed"]): ChainStore(local_store(), exp.experiment_id, run.info.run_id)
            for run in client.search_runs([exp.experiment_id], "tags.`lth.role` = 'chain'")}


def _level(store: ChainStore, level: int) -> tuple[dict, dict, float]:
    """A chain level's ticket (masks and rewind state), trained weights and best return."""
    run_id = store.finished_runs()[level].info.run_id
    return (store.load(run_id, "ticket.pt"), store.load(run_id, "trained.pt"),
            store.client.get_run(run_id).data.metrics["ticket/best_return"])


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_a_member_trains_as_its_own_seed_whatever_its_mates_and_each_level_draws_anew(in_tmp: Path) -> None:
    """Seeds wired per member and per level, in a real study: a member's initial weights are those a solo chain of
    its seed starts from, and its whole chain (env seeds, acting and shuffling generators, evaluation episodes)
    is the same whichever mates it has; different seeds differ; and two levels whose masks are equal (amount too
    small to prune one weight) still train differently, solo and in a population."""
    study = [*TINY, "--imp.levels", "2", "--imp.amount", "0.001"]  # round(0.001 * 352) = 0 weights pruned
    for name, seeds, population in (("forward", "0,1,2", "3"), ("backward", "2,1,0", "3"), ("solo", "1", "1")):
        main(["imp", *study, "--seeds", seeds, "--population", population,
              "--trainer.logger.init_args.experiment_name", name])
    client = MlflowClient(local_store())
    forward, backward, solo = (_seed_chains(client, name) for name in ("forward", "backward", "solo"))
    for level in (0, 1):
        one, other = _level(forward[1], level), _level(backward[1], level)  # seed 1, between different mates
        assert _same(one[0]["masks"], other[0]["masks"]) and _same(one[1], other[1]) and one[2] == other[2], level
    tickets = {seed: _level(forward[seed], 0)[0] for seed in (0, 1, 2)}
    assert _same(tickets[1]["rewind_state"], _level(solo[1], 0)[0]["rewind_state"])  # a solo chain's initial weights
    assert not _same(tickets[0]["rewind_state"], tickets[1]["rewind_state"])
    assert len({_level(forward[seed], 0)[2] for seed in (0, 1, 2)}) > 1  # seeds act and evaluate differently
    for chains in (forward, solo):
        for store in chains.values():
            (ticket0, trained0, _), (ticket1, trained1, _) = _level(store, 0), _level(store, 1)
            assert _same(ticket0["masks"], ticket1["masks"])  # nothing pruned: the same network twice...
            assert not _same(trained0, trained1)  # ...trained on new draws at level 1


def test_a_seeds_conditions_share_one_dense_level_0_trained_once(in_tmp: Path, monkeypatch) -> None:
    """Level 0 is one dense fit per seed, recorded under every condition's chain: 2 seeds x 4 conditions fit a
    population of 2 at level 0 and of 8 at level 1; each seed's four level-0 records hold the same trained weights,
    score and learning curve, and each condition prunes that one fit its own way."""
    import lth.study.imp

    fitted: list[int] = []
    real_fit = lth.study.imp.L.Trainer.fit

    def counting_fit(trainer, model, *args, **kwargs):
        fitted.append(model.members)
        return real_fit(trainer, model, *args, **kwargs)

    monkeypatch.setattr(lth.study.imp.L.Trainer, "fit", counting_fit)
    main(["imp", *TINY, "--imp.levels", "2", "--imp.conditions", "all", "--seeds", "0,1",
          "--trainer.logger.init_args.experiment_name", "shared"])
    assert fitted == [2, 8]
    client = MlflowClient(local_store())
    exp = client.get_experiment_by_name("shared")
    for seed in ("0", "1"):
        chains = client.search_runs([exp.experiment_id], f"tags.`lth.role` = 'chain' and tags.seed = '{seed}'")
        assert len(chains) == 4
        records = []
        for chain in chains:
            store = ChainStore(local_store(), exp.experiment_id, chain.info.run_id)
            runs = store.finished_runs()
            level0 = runs[0].info.run_id
            curve = [(m.step, m.value) for m in client.get_metric_history(level0, "eval/return")]
            records.append((store.load(level0, "trained.pt"), runs[0].data.metrics["ticket/best_return"], curve,
                            runs[0].data.params["seed"], store.load(runs[1].info.run_id, "ticket.pt")))
        trained, best, curve, param_seed, _ = records[0]
        assert curve and param_seed == seed
        for other in records[1:]:
            assert _same(trained, other[0]) and best == other[1] and curve == other[2] and other[3] == seed
        level1 = {record[4]["condition"]: record[4] for record in records}
        assert _same(level1["mask/weights"]["masks"], level1["mask/permuted"]["masks"])  # both keep the IMP mask
        for baseline in ("permuted/permuted", "random/reinit"):  # their masks are shuffled or drawn at random
            assert not _same(level1["mask/weights"]["masks"], level1[baseline]["masks"]), baseline
