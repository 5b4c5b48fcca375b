"""``make mutants``: does the suite catch the wiring bugs it should? Each mutant is one small, realistic hand-made
bug, a ``(file, old, new)`` edit. For each, the tree is copied to a temporary folder, the edit applied there (never
in the checkout), and the mutant's test files run against the copy; a failing test *kills* it.

Prints one line per mutant (killed, by which test; survived; or stale: its ``old`` text no longer occurs exactly
once, so a refactor moved the code and the mutant must be rewritten) and exits non-zero unless every mutant was
killed. Not part of ``make test``: it runs the relevant test files once per mutant (tens of minutes).

    python tests/mutants.py               # every mutant
    python tests/mutants.py --only seeds  # the mutants whose name contains "seeds"
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # test files or node ids that must kill it


POPULATION = ("tests/test_population_imp.py", "tests/test_population.py")
MUTANTS = (
    # -- how a study wires seeds into its members and levels (lth/study/population.py, lth/study/imp.py, datamodules/envs.py)
    Mutant("population: every member starts from seed 0's initial weights", "lth/study/population.py",
           "_initial_agent(type(model), hparams, seed)", "_initial_agent(type(model), hparams, seeds[0])", POPULATION),
    Mutant("population: every member gets member 0's env seeds", "lth/study/population.py",
           '"seed": list(seeds)', '"seed": [seeds[0]] * len(seeds)', POPULATION),
    Mutant("imp: every member's generator is seeded from member 0's seed", "lth/study/imp.py",
           "model.seed_members([training_seed(seed, level) for seed in seeds]",
           "model.seed_members([training_seed(seeds[0], level) for seed in seeds]", POPULATION),
    # (every member acts and shuffles with its own generator, a population of one too: the level's global seed only
    # reaches what draws from torch's global generator, e.g. dropout)
    Mutant("imp: every level of a chain acts and shuffles with its level-0 generators", "lth/study/imp.py",
           "model.seed_members([training_seed(seed, level) for seed in seeds])",
           "model.seed_members([training_seed(seed, 0) for seed in seeds])", POPULATION),
    Mutant("imp: every chain trains its own level 0 (no shared dense fit per seed)", "lth/study/imp.py",
           "    if level == 0:\n", "    if False:\n",
           ("tests/test_population_imp.py::test_a_seeds_conditions_share_one_dense_level_0_trained_once",)),
    Mutant("pruning: a fit adopted from elsewhere keeps the model's own weights", "callbacks/pruning.py",
           "            write(chain.tracked, weights)\n", "",
           ("tests/test_pruning_callback.py",)),
    Mutant("envs: every member is evaluated on member 0's evaluation episodes", "datamodules/envs.py",
           "member_copy_seeds([evaluation_seed(s) for s in self.seeds], episodes)",
           "member_copy_seeds([evaluation_seed(self.seeds[0]) for s in self.seeds], episodes)", POPULATION),
    # -- the pruning callback and its mask maths
    Mutant("pruning: the generator ignores the level (same draws at every level)", "callbacks/chain_state.py",
           "return torch.Generator().manual_seed(pruning_seed(self.seed, level))",
           "return torch.Generator().manual_seed(pruning_seed(self.seed, 0))",
           ("tests/test_pruning_callback.py", "tests/test_conditions.py")),
    Mutant("pruning: a tie with the best score replaces the earlier best weights", "callbacks/chain_state.py",
           'better = self.best_score is None or (score > self.best_score if mode == "max" else score < self.best_score)',
           'better = self.best_score is None or (score >= self.best_score if mode == "max" else score <= self.best_score)',
           ("tests/test_pruning_callback.py",)),
    Mutant("masks: ties ranked with an unstable sort", "callbacks/masks.py",
           "order = torch.sort(flat_w[alive], stable=True).indices",
           "order = torch.sort(flat_w[alive], stable=False).indices", ("tests/test_masks.py",)),
    Mutant("conditions: the ticket's rewound weights are not masked", "callbacks/conditions.py",
           "return masks, {n: rewind[n] * masks[n] for n in masks}\n\n\ndef _mask_permuted",
           "return masks, {n: rewind[n] for n in masks}\n\n\ndef _mask_permuted",
           ("tests/test_conditions.py", "tests/test_pruning_callback.py")),
    Mutant("pruning: prune_from='best' prunes from the last weights", "callbacks/chain_state.py",
           'source = self.best_weights if prune_from == "best" and self.best_weights else snapshot(self.tracked)',
           "source = snapshot(self.tracked)", ("tests/test_pruning_callback.py",)),
    Mutant("pruning: gradients are not masked (only the step hook holds the mask)", "callbacks/pruning.py",
           "self._handles.append(param.register_hook(_mask_grad(self._masks_now[name])))", "pass",
           ("tests/test_pruning_callback.py",)),
    Mutant("pruning: weights are not re-masked after an optimizer step", "callbacks/pruning.py",
           "self._handles.append(optimizer.register_step_post_hook(self._after_step))", "pass",
           ("tests/test_pruning_callback.py",)),
    # -- divergence in a population
    Mutant("modules: in a population, a member's overflowing step is not undone", "lth/modules/divergence.py",
           "        self.restore(bad)\n", "", ("tests/test_divergence.py",)),
    Mutant("modules: a frozen member's weights are overwritten by the next remember()",
           "lth/modules/divergence.py", "good.copy_(torch.where(_along(frozen, weight), good, weight))",
           "good.copy_(weight)", ("tests/test_population.py", "tests/test_dqn_population.py")),
    Mutant("modules: gradients are clipped over the whole population, not per member", "lth/modules/divergence.py",
           "scale = (max_norm / (member_norms(grads) + 1e-6)).clamp(max=1.0)",
           "scale = (max_norm / (member_norms(grads).norm() + 1e-6)).clamp(max=1.0)",
           ("tests/test_population.py", "tests/test_dqn_population.py", "tests/test_distill_population.py")),
    # -- a chain's identity
    Mutant("chain identity: imp.rewind and imp.prune_from left out of the hash", "lth/store/chain_identity.py",
           'IMP_KEYS_IGNORED = ("levels", "condition", "conditions", "branch_from")',
           'IMP_KEYS_IGNORED = ("levels", "condition", "conditions", "branch_from", "rewind", "prune_from")',
           ("tests/test_chain_identity.py",)),
    Mutant("chain identity: a member's description keeps the study's data seed", "lth/store/chain_identity.py",
           'data["init_args"] = {**data["init_args"], "seed": seed}', 'data["init_args"] = {**data["init_args"]}',
           ("tests/test_chain_identity.py",)),
    Mutant("chain identity: options at their defaults stay in it (a new option starts new chains)",
           "lth/store/chain_identity.py", "if k in keep or k not in defaults or plain(v) != plain(defaults[k])}",
           "if True}", ("tests/test_chain_identity.py",)),
    Mutant("chain identity: the chain's seed is left out at its default", "lth/store/chain_identity.py",
           'keep = ("seed",) if section == "data" else ()', "keep = ()", ("tests/test_chain_identity.py",)),
    # -- the store
    Mutant("chain store: a level is marked complete before its metrics and artifacts are written", "lth/store/chain_store.py",
           "        self.client.log_batch(run_id, metrics=metric_batch(metrics))\n"
           "        self.log_files(files, run_id)\n"
           "        self._require_claim()\n"
           "        self.client.set_tag(run_id, self.COMPLETE, \"true\")\n",
           "        self._require_claim()\n"
           "        self.client.set_tag(run_id, self.COMPLETE, \"true\")\n"
           "        self.client.log_batch(run_id, metrics=metric_batch(metrics))\n"
           "        self.log_files(files, run_id)\n",
           ("tests/test_imp.py",)),
    Mutant("chain store: a chain is found, created and claimed without the store's file lock", "lth/store/chain_store.py",
           "        with cls._locked(tracking_uri):\n", "        if True:\n",
           ("tests/test_chain_claims.py::test_racing_opens_of_one_chain_make_one_chain",)),
    Mutant("claims: a claim whose process is gone from this host is not stale", "lth/store/claims.py",
           "    except ProcessLookupError:\n        return True\n", "    except ProcessLookupError:\n        return False\n",
           ("tests/test_chain_claims.py",)),
)


def copy_tree(target: Path) -> None:
    """The checkout's tracked and new files, with ``lth/callbacks`` and ``lth/datamodules`` linked to their
    folders, so that ``import lth.callbacks`` in the copy finds the copy's (not the installed checkout's)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for package in ("callbacks", "datamodules"):
        (target / "lth" / package).symlink_to(target / package, target_is_directory=True)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, str]:
    """Run ``tests`` in ``tree`` (stop at the first failure); (passed, the first failing test's id)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], cwd=tree,
                              env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    failed = re.search(r"^(FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)
    return proc.returncode == 0, failed.group(2) if failed else proc.stdout.strip().splitlines()[-1:][0]


def check_copy_is_imported(tree: Path) -> None:
    code = "import lth, lth.callbacks, lth.datamodules; print(lth.__file__, lth.callbacks.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                         capture_output=True, text=True, check=True).stdout
    if any(not Path(p).resolve().is_relative_to(tree.resolve()) for p in out.split()):
        raise SystemExit(f"the copy imports lth from elsewhere: {out.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="run the mutants whose name contains this text")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutant's test run")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only in m.name]
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="lth-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        check_copy_is_imported(tree)
        for mutant in chosen:
            path = tree / mutant.path
            pristine = path.read_text()
            if pristine.count(mutant.old) != 1:
                survivors += 1
                print(f"STALE     {mutant.name}: its text occurs {pristine.count(mutant.old)} times in {mutant.path}",
                      flush=True)
                continue
            path.write_text(pristine.replace(mutant.old, mutant.new))
            started = time.monotonic()
            try:
                passed, detail = run_tests(tree, mutant.tests, args.timeout)
            finally:
                path.write_text(pristine)
            took = f"{time.monotonic() - started:.0f} s"
            if passed:
                survivors += 1
                print(f"SURVIVED  {mutant.name} ({', '.join(mutant.tests)}; {took})", flush=True)
            else:
                print(f"killed    {mutant.name}: {detail} ({took})", flush=True)
    print(f"{len(chosen) - survivors} of {len(chosen)} mutants killed")
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
