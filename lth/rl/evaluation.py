"""Greedy evaluation episodes, shared by every agent."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type


@torch.no_grad()
def evaluate_episodes(env: EnvBase, policy: TensorDictModuleBase, max_steps: int = 1_000_000) -> torch.Tensor:
    """Play exactly one episode in each of ``env``'s batch copies with the deterministic (greedy/mean) policy.

    Returns the undiscounted return of each copy's first episode; copies that finish early keep running
    (auto-reset) but no longer count.
    """
    n = env.batch_size.numel()
    returns = torch.zeros(n)
    finished = torch.zeros(n, dtype=torch.bool)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        td = env.reset()
        for _ in range(max_steps):
            td, next_td = env.step_and_maybe_reset(policy(td))
            returns += td["next", "reward"].reshape(n) * ~finished
            finished |= td["next", "done"].reshape(n)
            if finished.all():
                return returns
            td = next_td
    raise RuntimeError(f"evaluation did not finish {n} episodes within {max_steps} steps")
