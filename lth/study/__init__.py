"""The study engine: IMP settings, the level loop, populations, recording, executors and input-mask transfers."""
