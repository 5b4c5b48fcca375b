# `make demo` and `make test` each create .venv and install the project on first use: the demo the package alone,
# the tests every extra (simulators, cluster, test tools).
VENV := .venv
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.base-stamp
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow mutants bench results results-offline ui server clean

# pip unpacks torch's CUDA wheels (~5 GB installed) in TMPDIR: keep them on the project's disk, not a small /tmp.
$(BASE_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	mkdir -p $(VENV)/pip-tmp
	TMPDIR=$(CURDIR)/$(VENV)/pip-tmp $(PY) -m pip install --quiet --no-cache-dir -e .
	rm -rf $(VENV)/pip-tmp
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP)
	mkdir -p $(VENV)/pip-tmp
	TMPDIR=$(CURDIR)/$(VENV)/pip-tmp $(PY) -m pip install --quiet --no-cache-dir -e '.[all]'
	rm -rf $(VENV)/pip-tmp
	touch $(STAMP)

demo: $(BASE_STAMP)
	$(VENV)/bin/lth imp --config configs/demo/cartpole_ppo.yaml --imp.conditions all --imp.levels 11 \
		--trainer.enable_progress_bar false --trainer.enable_model_summary false

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Hand-made wiring bugs (tests/mutants.py), each applied to a copy of the tree: the suite must kill every one.
mutants: $(STAMP)
	$(PY) tests/mutants.py

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/ppo_throughput.py --seeds 0 1 2
	$(PY) benchmarks/dqn_throughput.py --frames 1000000
	$(PY) benchmarks/study_throughput.py  # the CartPole IMP study (5 seeds): populations vs one chain at a time vs SB3
	$(PY) benchmarks/study_throughput.py --seeds 0-9 --arms population,sb3 --name study_throughput_10seeds
	$(PY) benchmarks/study_throughput.py --arms '' --dqn --name study_throughput_dqn  # MazeGrid DQN, 8 members
	$(PY) benchmarks/cluster_units.py  # units/min on lth.store.server: local executor vs Ray

# docs/RESULTS.md and the README's results list. `make results-offline` regenerates both, and every figure, from the
# committed docs/results/*/per_seed.csv in seconds (no store, no training); `make results` first runs or resumes the
# studies of ITEMS in MLflow on this machine and exports their per-seed data. Hours per item, measured on 2 cores:
# (from each study.json) tickets ~3.5 h (CartPole PPO 48 min, distillation 11; Acrobot PPO 56 min, distillation
# 55 min; CartPole actor+critic 42 min); masks ~40 min (three initialisations, transfer); acrobot-inputs ~20 min.
ITEMS = tickets masks acrobot-inputs
results: $(STAMP)
	$(PY) -m studies.make_results --items $(ITEMS)

results-offline: $(STAMP)
	$(PY) -m studies.make_results --offline

ui: $(STAMP)
	$(VENV)/bin/lth ui

# A cluster's head node: MLflow on PostgreSQL (mlruns/postgres), artifacts proxied to mlruns/artifacts. HOST=0.0.0.0
# serves the cluster and turns on MLflow's basic auth; the workers' exports are printed and kept in mlruns/worker.env.
HOST = 127.0.0.1
PORT = 5000
server: $(STAMP)
	$(VENV)/bin/lth server --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache
