"""Every seed derived from a study seed is named once (lth.callbacks.seeding) and never shared by two uses."""

from lth.callbacks.seeding import evaluation_seed, pruning_seed, training_seed


def test_derived_seeds_differ_between_seeds_levels_and_uses() -> None:
    pairs = [(seed, level) for seed in range(200) for level in range(60)]
    training = {training_seed(*pair) for pair in pairs}
    pruning = {pruning_seed(*pair) for pair in pairs}
    assert len(training) == len(pruning) == len(pairs)  # no two (seed, level) share a seed
    assert training_seed(3, 5) != pruning_seed(3, 5) and evaluation_seed(3) != 3  # no use replays another's draws
