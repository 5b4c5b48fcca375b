"""docs/RESULTS.md's claims from per-seed data (studies/): the verdict wording follows the rule, the input-mask
criteria can fail, and the committed RESULTS.md and README block are exactly what the generator makes of the
committed per_seed.csv files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lth.analysis.per_seed import Level, PerSeed, write_per_seed
from studies import inputs, make_results, markdown, mazegrid, tickets
from studies.store import busy_minutes

CONDITIONS = ("mask/weights", "mask/permuted", "permuted/permuted", "random/reinit")
META = {"experiment": "e", "env": "CartPole-v1", "algo": "ppo", "modules": ["actor"], "frames": 80000,
        "paper_frames": 80000, "amount": 0.2, "levels": 20, "minutes": 12.0}


def ticket_study(tmp_path: Path, sparse: dict[str, float], noise: float, seeds: int = 15) -> tickets.TicketStudy:
    """A CartPole study on disk whose conditions score 500 dense and ``sparse[c]`` (+ per-seed noise) at density
    <= 0.1; every seed shares its condition's offset, so pairing by seed removes the noise it shares."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, noise, (seeds, 20))
    rows = []
    for c in CONDITIONS:
        for seed in range(seeds):
            for level in range(20):
                density = 0.8 ** level
                value = 500.0 if density > 0.1 else sparse[c] + shared[seed, level] + rng.normal(0, 1)
                rows.append((c, seed, level, {"density": density, "ticket/best_return": float(np.clip(value, 0, 500))}))
    study = tickets.TicketStudy("synthetic", "Synthetic, PPO", "cartpole/ppo.yaml", "e", f"0-{seeds - 1}", 20,
                                (0.0, 500.0), root=tmp_path)
    write_per_seed(rows, study.folder / "per_seed.csv")
    (study.folder / "study.json").write_text(json.dumps({**META, "seeds": list(range(seeds))}))
    return study


def test_a_clear_mask_effect_holds_and_overlap_is_not_resolved(tmp_path: Path) -> None:
    clear = ticket_study(tmp_path / "clear", {"mask/weights": 450, "mask/permuted": 440, "permuted/permuted": 100,
                                              "random/reinit": 150}, noise=40)
    section, _, _ = tickets.study_section(clear, draw=False)
    assert "**holds**: all four paired differences" in section.markdown
    assert "ticket and mask/permuted not distinguished" not in section.readme[0]  # 10 points apart, seeds paired
    assert "the mask claim holds (4 of 4 comparisons)" in section.readme[0]
    overlap = ticket_study(tmp_path / "overlap", dict.fromkeys(CONDITIONS, 300), noise=40)
    text = tickets.study_section(overlap, draw=False)[0].markdown
    assert "**holds in 0 of 4 comparisons**" in text and text.count(": not resolved") == 4
    reversed_ = ticket_study(tmp_path / "reversed", {"mask/weights": 100, "mask/permuted": 100,
                                                     "permuted/permuted": 400, "random/reinit": 400}, noise=10)
    assert "**is reversed**" in tickets.study_section(reversed_, draw=False)[0].markdown
    few = ticket_study(tmp_path / "few", {"mask/weights": 450, "mask/permuted": 440, "permuted/permuted": 100,
                                          "random/reinit": 150}, noise=1, seeds=4)
    assert "holds in 0 of 4" in tickets.study_section(few, draw=False)[0].readme[0]  # 4 seeds: nothing is called


def test_prunes_further_compares_each_seeds_sparsest_kept_density(tmp_path: Path) -> None:
    def study(name: str, cut: list[int]) -> tuple[PerSeed, dict]:
        rows = [("mask/weights", seed, level, {"density": 0.8 ** level,
                                                "ticket/best_return": 500.0 if level <= k else 10.0})
                for seed, k in enumerate(cut) for level in range(20)]
        write_per_seed(rows, tmp_path / name / "per_seed.csv")
        return PerSeed.read(tmp_path / name / "per_seed.csv"), {**META, "seeds": list(range(len(cut)))}

    ppo = study("ppo", [8, 9, 10, 8, 9, 10, 9, 8, 10, 9])
    distill = study("distill", [14, 15, 16, 15, 14, 16, 15, 15, 14, 16])
    text, short = tickets.pruned_further(ppo, distill, 0.0)
    assert "**holds**" in text and short.endswith("holds")
    text, short = tickets.pruned_further(distill, ppo, 0.0)  # the other way round
    assert short.endswith("reversed")
    same = study("same", [8, 9, 10, 8, 9, 10, 9, 8, 10, 9])
    assert tickets.pruned_further(ppo, same, 0.0)[1].endswith("not resolved")


def input_table(tmp_path: Path, alive: dict[int, list[tuple[int, ...]]], returns: float = 500.0) -> PerSeed:
    """Ticket chains whose actor keeps ``alive[seed][level]`` weights per CartPole input."""
    names = (*inputs.CARTPOLE.dropped, *inputs.CARTPOLE.kept)
    rows = [("mask/weights", seed, level, {"density": 0.8 ** level, "ticket/best_return": returns,
                                           **{f"inputs/actor/{n}": float(c) for n, c in zip(names, counts)}})
            for seed, levels in alive.items() for level, counts in enumerate(levels)]
    write_per_seed(rows, tmp_path / "per_seed.csv")
    return PerSeed.read(tmp_path / "per_seed.csv")


def test_the_input_criterion_needs_every_dropped_input_dead_before_any_kept_one(tmp_path: Path) -> None:
    study = inputs.CARTPOLE
    data = input_table(tmp_path, {
        0: [(9, 9, 9, 9), (0, 4, 9, 9), (0, 0, 9, 9), (0, 0, 0, 9)],  # cart first, then a pole input: met
        1: [(9, 9, 9, 9), (0, 9, 9, 9), (0, 9, 0, 9), (0, 0, 0, 9)],  # a pole input dies before the cart velocity
        2: [(9, 9, 9, 9), (0, 9, 9, 9), (0, 9, 9, 9), (0, 9, 9, 9)],  # cart velocity never dies
        3: [(9, 9, 9, 9), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0)],  # all die together: not "before"
    })
    assert [study.dropped_first(data, s) for s in range(4)] == [True, False, False, False]
    assert [study.sees_only_kept(data, s) for s in range(4)] == [2, None, None, None]
    assert study.transfer_source(data) == (0, 2)
    counts = inputs.claim_counts(study, data)
    assert counts == {"n": 4, "first": 1, "only": 1, "solved": 1, "kept_dies": 3}
    failing = input_table(tmp_path / "low", {0: [(9, 9, 9, 9), (0, 0, 9, 9)]}, returns=100.0)
    assert study.transfer_source(failing) is None  # sees only the pole but does not solve the task there


def cells(on: float, off: float, kept: dict[str, float] | None = None) -> dict[str, float]:
    """``cells/*`` columns with both enemies at ``on``/``off`` and every map keeping ``kept`` of its weights."""
    kept = kept or {}
    out = {}
    for name in ("empty", "agent", "enemy_a", "enemy_b", "coin", "poison"):
        out |= {f"cells/{name}/kept": kept.get(name, 0.0), f"cells/{name}/on_support": on,
                f"cells/{name}/off_support": off}
    return out


def test_the_patrol_criterion_fails_on_an_empty_map_and_on_a_map_that_sees_too_little() -> None:
    assert mazegrid.patrol_level({0: cells(1.0, 1.0), 5: cells(0.9, 0.0), 9: cells(0.0, 0.0)}, "enemy_a") == 5
    assert mazegrid.patrol_level({0: cells(1.0, 1.0), 9: cells(0.0, 0.0)}, "enemy_a") is None  # every cell cut
    assert mazegrid.patrol_level({0: cells(1.0, 1.0), 9: cells(0.4, 0.0)}, "enemy_b") is None  # 40% of the patrol
    assert mazegrid.patrol_level({0: cells(1.0, 1.0), 9: cells(1.0, 0.05)}, "enemy_b") is None  # off-patrol seen
    assert mazegrid.agent_least_pruned(cells(0, 0, {"agent": 0.03, "empty": 0.01}))
    assert not mazegrid.agent_least_pruned(cells(0, 0, {"agent": 0.03, "empty": 0.03}))  # a tie is not "least"


def test_busy_minutes_counts_overlaps_once_and_skips_gaps() -> None:
    minute = 60_000
    assert busy_minutes([(0, 2 * minute), (minute, 3 * minute), (10 * minute, 11 * minute)]) == 4.0
    assert busy_minutes([]) == 0.0


def test_a_budget_states_its_factor_below_the_paper_without_rounding_it_away() -> None:
    assert markdown.budget({"frames": 200_000, "paper_frames": 500_000}) == (
        "200k frames per level, 2.5x below the paper's 500k")
    assert markdown.budget({"frames": 100_000, "paper_frames": 500_000}).endswith("5x below the paper's 500k")
    assert markdown.budget({"frames": 80_000, "paper_frames": 80_000}) == "the paper's 80k frames per level"


def test_the_readme_block_is_replaced_between_its_markers() -> None:
    readme = f"intro\n{make_results.BEGIN}\n- old line\n{make_results.END}\nrest\n"
    assert make_results.with_block(readme, ["- a", "- b"]) == (
        f"intro\n{make_results.BEGIN}\n- a\n- b\n{make_results.END}\nrest\n")
    with pytest.raises(ValueError, match="no results block"):
        make_results.with_block("intro\n", ["- a"])


def test_results_and_readme_are_what_the_committed_per_seed_data_give() -> None:
    """The published text is generated, never typed: regenerating it offline (no figures) from the committed
    per_seed.csv files reproduces docs/RESULTS.md and the README's results block byte for byte."""
    text, bullets, files = make_results.render(draw=False)
    assert make_results.RESULTS_MD.read_text() == text
    for path, content in files.items():
        assert path.read_text() == content, path
    readme = make_results.README.read_text()
    assert make_results.readme_block(bullets) in readme
    for bullet in bullets:  # each README line links a heading RESULTS.md has
        anchor = bullet.split("(docs/RESULTS.md#", 1)[1].split(")", 1)[0]
        assert any(markdown.anchor(line) == anchor for line in text.splitlines() if line.startswith("#"))


def test_every_study_folder_is_a_study_the_generator_knows() -> None:
    """No stale folder under docs/results: each is a study's (or its transfer's) and holds its data."""
    known = {s.name for s in tickets.STUDIES} | {mazegrid.STUDY.name}
    known |= {s.name for s in inputs.SCHEMES} | {inputs.ACROBOT.name}
    known |= {f"{s.name}_transfer" for s in (inputs.CARTPOLE, inputs.ACROBOT)}
    for folder in (Path(make_results.ROOT) / "docs" / "results").iterdir():
        assert folder.name in known, f"docs/results/{folder.name} belongs to no study"
        assert (folder / "per_seed.csv").exists() or (folder / "curves.csv").exists()


def test_study_definitions_are_distinct() -> None:
    studies = [*tickets.STUDIES, mazegrid.STUDY, *inputs.SCHEMES, inputs.ACROBOT]
    assert len({s.name for s in studies}) == len(studies)
    assert len({s.experiment for s in studies}) == len(studies)
    assert dataclasses.replace(tickets.CARTPOLE_PPO, root=Path("/x")).folder == Path("/x/cartpole_ppo_tickets")


def test_actor_only_claims_compare_the_densities_both_studies_reach(tmp_path: Path) -> None:
    def study(name: str, scores: dict[str, float]) -> tuple[PerSeed, dict]:
        rng = np.random.default_rng(len(name))
        rows = [(c, seed, level, {"density": 0.8 ** level, "ticket/best_return":
                                  500.0 if 0.8 ** level > 0.1 else scores[c] + float(rng.normal(0, 5))})
                for c in scores for seed in range(10) for level in range(20)]
        write_per_seed(rows, tmp_path / name / "per_seed.csv")
        return PerSeed.read(tmp_path / name / "per_seed.csv"), META

    # actor only: permuted/permuted 300, random/reinit 100; the same study run deeper, to 0 on levels 20-27
    ap = study("ap", {"permuted/permuted": 300.0, "random/reinit": 100.0})
    deep = study("ap", {"permuted/permuted": 300.0, "random/reinit": 100.0})
    for chain in (c for by_seed in deep[0].data.values() for c in by_seed.values()):
        chain.update({k: Level(0.8 ** k, 0.0) for k in range(20, 28)})
    acp = study("acp", {"permuted/permuted": 10.0, "random/reinit": 150.0})
    text = tickets.actor_only(ap, acp)
    assert "the caption's claim is **reversed**" in text and "the section 4 claim **holds**" in text
    assert tickets.actor_only(deep, acp) == text  # levels 20-27 of the deeper study are left out
    assert "the section 4 claim is **reversed**" in tickets.actor_only(acp, ap)
