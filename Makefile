# kvtier: `make demo` runs the seed's benchmark at its smallest scale, `make test`
# runs every test.
# Both do all set-up themselves (Debian packages + .venv) on a fresh machine.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= 2
BUILD_TYPE ?= RelWithDebInfo
# ccache, where installed, makes rebuilds of unchanged files free; optional.
CCACHE := $(shell command -v ccache 2>/dev/null)
LAUNCHER := $(if $(CCACHE),-DCMAKE_C_COMPILER_LAUNCHER=$(CCACHE) -DCMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE))
# Paths relative to the checkout in ccache's hash, so a fresh clone elsewhere
# (CI) reuses what an earlier build compiled.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: setup build python-ext test test-cpp test-python test-asan demo bench bench-seed format clean

setup: .stamp/setup

.stamp/setup: scripts/setup.sh python/requirements.txt python/overrides.txt
	bash scripts/setup.sh
	@mkdir -p .stamp && touch $@

build: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(LAUNCHER)
	cmake --build $(BUILD) -j$(JOBS)

# The kvtier Python package in .venv, which every vLLM engine imports
# (scripts/test_python.sh and deploy/demo.sh build it themselves).
python-ext: setup
	bash scripts/python_ext.sh

test-cpp: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

test-python: build
	bash scripts/test_python.sh

test: test-cpp test-python

# The C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: setup
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKVTIER_SANITIZE=ON $(LAUNCHER)
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS)

demo: build
	bash deploy/demo.sh

bench: build
	bash bench/run_store_bench.sh

# The seed's three-scenario table (plus prefix-aware routing) at every input
# length, into bench/results/seed_table.{json,md} and the charts, and the
# README's table. SEED_BENCH_ARGS adds flags (e.g. --scenarios recalc,hbm,kvtier).
bench-seed: build python-ext
	.venv/bin/python bench/seed_bench.py --update-readme $(SEED_BENCH_ARGS)

format:
	git ls-files -co --exclude-standard '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) .stamp
