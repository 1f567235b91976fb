# Metamer Lab. `make run` serves the demo; `make test` runs the whole suite.
# Both bootstrap .venv on first use. The CPU build torch==2.13.0 is installed before the project
# so that the project's looser `torch>=2.4` requirement never pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# Idle OpenMP threads spin-wait by default, which starves everything else on a small, shared
# machine (measured: a 3.4 s synthesis test took 64 s). Passive waiting changes no results.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test bench chromium slurm clean-venv demo-banks

$(VENV)/.app: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.full: $(VENV)/.app pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[synthesis,speech,dev]'
	touch $@

run: $(VENV)/.app
	$(BIN)/metamers demo --host $(HOST) --port $(PORT)

# Browser tests need Chromium from Debian's packages; install it when missing (CI does too).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "Installing Chromium for the browser tests..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); }

# The Slurm test starts a private single-node cluster from Debian's packages (slurm-wlm, munge);
# install them when missing (CI does too). Without root or sudo the install fails and that test
# is skipped with the reason, unless METAMERS_REQUIRE_SLURM is set (as .ci/run sets it).
slurm:
	@(for c in slurmctld slurmd sbatch munged; do command -v $$c >/dev/null 2>&1 || test -x /usr/sbin/$$c || exit 1; done) || \
	  { echo "Installing Slurm and MUNGE for the cluster test..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) || \
	    (sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) || \
	    echo "Could not install slurm-wlm and munge: the Slurm test will be skipped"; }

test: $(VENV)/.full chromium slurm
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.full
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
