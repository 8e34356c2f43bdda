# `make demo` and `make test` set everything up on a fresh machine (no GPU, no internet but PyPI).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MAX_JOBS ?= 2

.PHONY: demo test browser cpp bench-e2e bench-reduce wheel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first (exact pins: a local cache serves them), then the package without build isolation so the
# C++ extension compiles against that torch. Re-runs only when the package definition or C++ sources change.
$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard csrc/*.* csrc/*/*.*)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --no-build-isolation -e '.[test,demo,cpp,serve,timm,hf,ray,openvino]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m salrt.demo demo-out

# The C++ runtime (cpp/README.md) against the venv's torch wheel: needs cmake, g++ and libssl-dev.
CPP_BIN := build/cpp/salrt_explain
$(CPP_BIN): $(STAMP) $(wildcard cpp/CMakeLists.txt cpp/*.py cpp/src/*.* cpp/include/salrt/*.h) \
           salrt/_version.py salrt/artifact.py salrt/formats/__init__.py salrt/graph/io.py
	cmake -S cpp -B build/cpp $(if $(wildcard build/cpp/CMakeCache.txt),,$(if $(shell command -v ninja),-G Ninja)) \
	      -DPython3_EXECUTABLE=$(abspath $(BIN)/python)
	cmake --build build/cpp -j $(MAX_JOBS)
	touch $@

cpp: $(CPP_BIN)

# tests/test_dataset.py opens the HTML gallery in a real headless browser: Debian's chromium, installed here
# when missing (apt-get, as root or through sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# SALRT_REQUIRE_EXTENSION=1: importing salrt fails if the C++ extension did not build, so the suite cannot
# pass by testing the pure-torch fallback alone.
test: $(STAMP) $(CPP_BIN) browser
	SALRT_REQUIRE_EXTENSION=1 $(BIN)/python -m pytest -q

bench-e2e: $(STAMP)  # every backend against the naive recipe on ResNet-50; updates README and docs/
	$(BIN)/python benchmarks/bench_e2e.py

bench-reduce: $(STAMP)  # the fused op against the torch op chain and torch.compile
	$(BIN)/python benchmarks/bench_reduce.py

wheel-check: $(STAMP)  # build a wheel, install it in a fresh venv, smoke-test it (a few minutes)
	bash benchmarks/check_wheel.sh

clean:
	rm -rf build demo-out salrt/_C*.so *.egg-info
