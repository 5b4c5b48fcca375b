# `make demo` and `make test` each create .venv and install the project on first use.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow bench results ui server clean

# pip unpacks torch's CUDA wheels (~5 GB installed) in TMPDIR: keep them on the project's disk, not a small /tmp.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	mkdir -p $(VENV)/pip-tmp
	TMPDIR=$(CURDIR)/$(VENV)/pip-tmp $(PY) -m pip install --quiet --no-cache-dir -e '.[test,cluster]'
	rm -rf $(VENV)/pip-tmp
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lth imp --config configs/demo/cartpole_ppo.yaml --imp.conditions all --imp.levels 11 \
		--trainer.enable_progress_bar false --trainer.enable_model_summary false

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/ppo_throughput.py --seeds 0 1 2
	$(PY) benchmarks/dqn_throughput.py --frames 1000000
	$(PY) benchmarks/study_throughput.py  # the CartPole IMP study (5 seeds): populations vs one chain at a time vs SB3
	$(PY) benchmarks/study_throughput.py --seeds 0-9 --arms population,sb3 --name study_throughput_10seeds
	$(PY) benchmarks/study_throughput.py --arms '' --dqn --name study_throughput_dqn  # MazeGrid DQN, 8 members
	$(PY) benchmarks/cluster_units.py  # units/min on lth.server: local executor vs Ray

# docs/RESULTS.md, item by item, on this machine (each resumes from MLflow; a rerun on a full store only redraws):
# masks ~1.5 h (CartPole input masks + transfer); tickets ~3.6 h (CartPole PPO 67 min, distillation 12, actor-only
# 32; Acrobot PPO 74, distillation 31); mazegrid ~3.3 h (objects, RGB, entangled); acrobot-inputs ~1 h; minatar
# ~1.8 h (expert and Breakout distillation); pybullet ~2.8 h (two 1.5M-frame fits, Hopper tickets).
# ITEMS=tickets regenerates one item and keeps the others.
ITEMS = masks tickets mazegrid acrobot-inputs minatar pybullet
results: $(STAMP)
	$(PY) docs/make_results.py --items $(ITEMS)

ui: $(STAMP)
	$(VENV)/bin/lth ui

# A cluster's head node: MLflow on PostgreSQL (mlruns/postgres), artifacts proxied to mlruns/artifacts. HOST=0.0.0.0
# serves the cluster and turns on MLflow's basic auth; the workers' exports are printed and kept in mlruns/worker.env.
HOST = 127.0.0.1
PORT = 5000
server: $(STAMP)
	$(PY) -m lth.server --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache
