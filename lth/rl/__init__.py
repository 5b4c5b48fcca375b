"""RL building blocks under the Lightning modules: networks, batched layers, agents, evaluation, schedules, domains."""
