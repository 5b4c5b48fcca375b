"""A chain is its configuration: the same command resumes it, a different one starts a new chain and says how it
differs, more ``--imp.levels`` extends it; the identity hash is the same in every process."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lth.cli import main
from lth.cli.parsing import parse
from lth.cli.runner import imp_study
from lth.cli.study_cli import ImpCLI
from lth.report.chains import load_chains
from lth.store.chain_identity import (
    chain_description,
    chain_hash,
    describe_differences,
    differences,
    flatten,
    member_description,
    plain,
    study_description,
)
from lth.study.settings import ImpSettings
from tests.conftest import CONFIGS, ROOT, local_store

TINY = ["--config", str(CONFIGS / "cartpole" / "ppo.yaml"), "--data.init_args.total_frames", "512",
        "--data.init_args.eval_every", "512", "--data.init_args.eval_episodes", "2",
        "--model.init_args.actor_hidden", "[16, 16]", "--model.init_args.critic_hidden", "[16, 16]",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--seeds", "0"]
EXPERIMENT = "CartPole-v1/ppo/mlp64x64"


def _chains(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], "tags.`lth.role` = 'chain'", order_by=["attributes.start_time"])


def _description(args: list[str]) -> dict:
    cli = parse(args, ImpCLI)
    settings = cli.settings
    return chain_description(imp_study(cli).description, vars(settings), settings.chain_conditions()[0])


def test_a_changed_configuration_starts_a_new_chain_and_the_same_command_resumes_it(in_tmp: Path, capsys) -> None:
    main(["imp", *TINY, "--imp.levels", "2"])
    client = MlflowClient(local_store())
    (old,) = _chains(client)
    capsys.readouterr()

    changed = [*TINY, "--imp.amount", "0.5", "--model.init_args.lr", "0.003"]
    main(["imp", *changed, "--imp.levels", "3"])
    out = capsys.readouterr().out
    old_id = old.info.run_id
    expected = (f"[mask/weights seed 0] new chain: the configuration differs from chain {old_id} in "
                "imp.amount (0.2 -> 0.5), model.init_args.lr (0.0005 -> 0.003)")
    assert [line for line in out.splitlines() if "new chain" in line] == [expected]
    assert "| 0 | 1.000 |" in out and "| 1 | 0.500 |" in out and "| 2 | 0.250 |" in out  # only the new chain's
    assert "| 1 | 0.800 |" not in out
    first, new = _chains(client)
    assert first.info.run_id == old_id
    assert new.data.tags["lth.chain_hash"] != old.data.tags["lth.chain_hash"]
    assert new.data.params["imp.amount"] == "0.5" and old.data.params["imp.amount"] == "0.2"
    assert "lth.claim.owner" not in new.data.tags  # released when the chain finished
    stored = json.loads(Path(client.download_artifacts(new.info.run_id, "chain.json", str(in_tmp))).read_text())
    assert chain_hash(stored) == new.data.tags["lth.chain_hash"] and stored["imp"]["amount"] == 0.5

    main(["imp", *changed, "--imp.levels", "3"])  # the same command: resumed, nothing trained
    out = capsys.readouterr().out
    assert "best return" not in out and "new chain" not in out and f"chain run id {new.info.run_id}" in out
    assert len(_chains(client)) == 2

    main(["imp", *changed, "--imp.levels", "4"])  # more levels: the same chain, extended by one level
    out = capsys.readouterr().out
    assert "new chain" not in out and "level 3: density 0.125" in out and "level 2:" not in out
    assert len(_chains(client)) == 2
    assert [m.step for m in client.get_metric_history(new.info.run_id, "density")] == [0, 1, 2, 3]
    assert [m.step for m in client.get_metric_history(old_id, "density")] == [0, 1]
    (reported,) = load_chains(local_store(), [EXPERIMENT])  # a report reads the newest chain, never a mix
    assert reported.run_id == new.info.run_id and sorted(reported.levels) == [0, 1, 2, 3]

    main(["imp", *changed, "--imp.levels", "1", "--no_resume"])  # still a new chain on request
    assert len(_chains(client)) == 3


def test_the_identity_ignores_where_and_how_a_chain_is_shown_and_levels(in_tmp: Path) -> None:
    base = _description(TINY)
    same = _description([*TINY, "--imp.levels", "7", "--trainer.enable_progress_bar", "true",
                         "--trainer.logger.init_args.tracking_uri", f"sqlite:///{in_tmp}/elsewhere/mlflow.db",
                         "--trainer.default_root_dir", "/somewhere/else", "--no_resume"])
    assert chain_hash(same) == chain_hash(base)
    for option, value, key in [("--imp.amount", "0.3", "imp.amount"), ("--seeds", "1", "seed"),
                               ("--data.init_args.total_frames", "1024", "data.init_args.total_frames"),
                               ("--trainer.max_steps", "3", "trainer.max_steps"),
                               ("--imp.conditions", "mask/permuted", "condition"),
                               ("--imp.modules", "[actor, critic]", "imp.modules")]:
        other = _description([*TINY, option, value])
        assert chain_hash(other) != chain_hash(base), option
        assert key in [k for k, _, _ in differences(flatten(base), flatten(other))], option
    assert "trainer.logger" not in " ".join(flatten(base)) and "levels" not in " ".join(flatten(base))


def test_the_hash_is_canonical_and_the_same_in_another_process(tmp_path: Path) -> None:
    description = {"model": {"init_args": {"lr": 0.0005, "hidden": [16, 16]}, "class_path": "lth.modules.PPO"},
                   "seed": 3, "imp": {"amount": 0.2, "rewind": "init", "modules": None}, "path": Path("/x")}
    reordered = {"imp": {"modules": None, "rewind": "init", "amount": 0.2}, "path": "/x", "seed": 3,
                 "model": {"class_path": "lth.modules.PPO", "init_args": {"hidden": (16, 16), "lr": 5e-4}}}
    assert chain_hash(description) == chain_hash(reordered)
    code = (f"from lth.store.chain_identity import chain_hash; import json; "
            f"print(chain_hash(json.loads({json.dumps(json.dumps(reordered, default=str))})))")
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           check=False, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == chain_hash(description), other.stderr[-2000:]
    assert chain_hash({**description, "seed": 4}) != chain_hash(description)


def test_the_differences_line_names_options_with_old_and_new_values() -> None:
    old = flatten({"imp": {"amount": 0.2, "rewind": "init"}, "model": {"init_args": {"lr": 0.0005}}})
    new = flatten({"imp": {"amount": 0.5, "rewind": 100}, "model": {"init_args": {"lr": 0.0005}}})
    assert describe_differences(differences(old, new)) == "imp.amount (0.2 -> 0.5), imp.rewind (init -> 100)"
    many = differences({f"k{i}": "1" for i in range(10)}, {f"k{i}": "2" for i in range(10)})
    assert describe_differences(many, limit=2) == "k0 (1 -> 2), k1 (1 -> 2) and 8 more"


@pytest.mark.parametrize("value", [float("nan"), object()])
def test_unusual_values_hash_without_addresses(value: object) -> None:
    assert "0x" not in json.dumps(flatten({"v": value}))
    assert chain_hash({"v": value}) == chain_hash({"v": value})


def _other(value: object) -> object:
    """A different value of the same kind (the identity test's generated change)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if value else 0.5
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, list):
        return [*value, "other"]
    if isinstance(value, dict):
        return {**value, "other": 1}
    return "other"


#: --imp.* settings that must NOT change a chain's identity: more levels extend it, and the condition is the
#: chain's own (the description's ``condition``, not these settings).
IMP_NOT_IN_IDENTITY = {"levels", "condition", "conditions"}
#: Trainer options that only show or store things (lth.store.chain_identity.TRAINER_KEYS_IGNORED), as a test fixes them.
TRAINER_NOT_IN_IDENTITY = {"logger", "callbacks", "enable_checkpointing", "enable_progress_bar",
                           "enable_model_summary", "enable_autolog_hparams", "log_every_n_steps", "default_root_dir",
                           "profiler", "model_registry"}


def test_every_setting_that_shapes_masks_changes_the_hash_and_only_the_listed_ones_do_not() -> None:
    """Generated from the parsed config's keys, so a new option is covered the day it is added."""
    cli = parse(TINY, ImpCLI)
    settings = vars(cli.settings)
    study = member_description(study_description(cli.config), 0)
    base = chain_hash(chain_description(study, settings, "mask/weights"))
    for field in dataclasses.fields(ImpSettings):
        changed = chain_hash(chain_description(study, {**settings, field.name: _other(settings[field.name])},
                                               "mask/weights"))
        assert (changed == base) == (field.name in IMP_NOT_IN_IDENTITY), f"imp.{field.name}"
    config = plain(cli.config.as_dict())
    for section in ("model", "data", "trainer"):
        for key, value in flatten(config[section]).items():
            changed = copy.deepcopy(config)
            *path, leaf = [section, *key.split(".")]
            node = changed
            for part in path:
                node = node[part]
            node[leaf] = _other(json.loads(value))
            other = chain_hash(chain_description(member_description(study_description(changed), 0), settings,
                                                 "mask/weights"))
            ignored = (section == "trainer" and key.split(".")[0] in TRAINER_NOT_IN_IDENTITY
                       or (section, key) == ("data", "init_args.seed"))  # the chain's seed is the member's own
            assert (other == base) == ignored, f"{section}.{key}"


def test_a_chains_identity_does_not_depend_on_the_population_it_trains_in() -> None:
    """Seed 1's chain is the same chain whether the study runs seed 1 alone or seeds 0 and 1 together."""
    def seed_1(seeds: str) -> str:
        cli = parse([*TINY, "--seeds", seeds], ImpCLI)
        settings = vars(cli.settings)
        return chain_hash(chain_description(member_description(imp_study(cli).description, 1), settings,
                                            "mask/weights"))

    assert seed_1("1") == seed_1("0,1") == seed_1("3,1")
    assert seed_1("1") != chain_hash(chain_description(
        member_description(imp_study(parse([*TINY, "--seeds", "0"], ImpCLI)).description, 0),
        vars(ImpSettings()), "mask/weights"))


def test_options_at_their_defaults_are_not_part_of_a_chain_so_a_later_lth_with_a_new_option_resumes_it() -> None:
    """A chain is identified with every model, data, trainer and ``--imp.*`` option at its default left out: an lth
    version that adds an option (with a default) finds the chains stored before it; a non-default value is part of
    the chain, and the chain's seed always is."""
    from lth.store.chain_identity import identity

    cli = parse(TINY, ImpCLI)
    study = imp_study(cli)
    defaults = {**study.defaults, "imp": dataclasses.asdict(ImpSettings())}
    settings = vars(cli.settings)

    def chain_id(description: dict, settings: dict, defaults: dict) -> str:
        return chain_hash(identity(chain_description(member_description(description, 0), settings, "mask/weights"),
                                   defaults))

    base = chain_id(study.description, settings, defaults)
    shown = identity(chain_description(member_description(study.description, 0), settings, "mask/weights"), defaults)
    assert "gamma" not in shown["model"]["init_args"] and "amount" not in shown["imp"]  # at their defaults
    assert shown["data"]["init_args"]["seed"] == 0 and shown["data"]["init_args"]["total_frames"] == 512
    later = copy.deepcopy(study.description)
    later["model"]["init_args"]["new_option"] = 7
    later["trainer"]["new_trainer_option"] = "x"
    later_defaults = {**defaults, "model": {**defaults["model"], "new_option": 7},
                      "trainer": {**defaults["trainer"], "new_trainer_option": "x"},
                      "imp": {**defaults["imp"], "new_imp_option": True}}
    newer = {**settings, "new_imp_option": True}
    assert chain_id(later, newer, later_defaults) == base
    later["model"]["init_args"]["new_option"] = 8
    assert chain_id(later, newer, later_defaults) != base


def test_a_chain_stored_before_a_new_option_resumes_and_says_which_options_are_new(in_tmp: Path, capsys,
                                                                                  monkeypatch) -> None:
    import lth.study.imp as imp

    main(["imp", *TINY, "--imp.levels", "1"])
    (stored,) = _chains(MlflowClient(local_store()))
    capsys.readouterr()
    describe, identify = imp.chain_description, imp.identity  # a later lth: a new --imp option, at its default

    def described(*args, **kwargs):
        description = describe(*args, **kwargs)
        return {**description, "imp": {**description["imp"], "new_option": 1}}

    monkeypatch.setattr(imp, "chain_description", described)
    monkeypatch.setattr(imp, "identity", lambda d, defaults: identify(d, {**defaults, "imp": {**defaults["imp"],
                                                                                             "new_option": 1}}))
    main(["imp", *TINY, "--imp.levels", "1"])
    out = capsys.readouterr().out
    assert "resumed; options new since it was stored, at their defaults: imp.new_option" in out
    assert f"chain run id {stored.info.run_id}" in out and "new chain" not in out
