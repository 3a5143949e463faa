"""`cosyagent models download | list`: the production models, fetched once by users with internet.

Nothing at run time downloads: the engines read these directories from disk. A download
goes to ``<models_dir>/<name>`` (default ``~/.local/share/cosyagent/models``, or
``$COSYAGENT_MODELS_DIR``), with progress bars, and resumes where an interrupted one stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

DEFAULT_MODELS_DIR = "~/.local/share/cosyagent/models"
HUB_URLS = {"huggingface": "https://huggingface.co", "modelscope": "https://www.modelscope.cn"}
_PROBE_TIMEOUT_S = 5.0


class ModelStoreError(Exception):
    """A download or listing that cannot proceed; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    huggingface: str
    modelscope: str
    required: tuple[str, ...]
    engine: str


MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "Fun-ASR-Nano-2512",
            "FunAudioLLM/Fun-ASR-Nano-2512",
            "FunAudioLLM/Fun-ASR-Nano-2512",
            ("config.yaml", "model.pt", "Qwen3-0.6B/config.json"),
            "asr.engine: funasr",
        ),
        ModelSpec(
            "Fun-CosyVoice3-0.5B-2512",
            "FunAudioLLM/Fun-CosyVoice3-0.5B-2512",
            "FunAudioLLM/Fun-CosyVoice3-0.5B-2512",
            ("cosyvoice3.yaml", "llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v3.onnx"),
            "tts.engine: cosyvoice",
        ),
    )
}


def models_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("COSYAGENT_MODELS_DIR") or DEFAULT_MODELS_DIR).expanduser()


def status(root: Path) -> list[tuple[ModelSpec, Path, list[str]]]:
    """Each known model, where it goes, and the required files missing there (empty: complete)."""
    return [
        (spec, root / spec.name, [f for f in spec.required if not (root / spec.name / f).is_file()])
        for spec in MODELS.values()
    ]


def probe(base_url: str, timeout_s: float = _PROBE_TIMEOUT_S) -> None:
    """Fail fast, with a clear message, when the hub cannot be reached (offline, firewall)."""
    try:
        httpx.head(base_url, timeout=timeout_s, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ModelStoreError(
            f"cannot reach {base_url} ({exc.__class__.__name__}: {exc}). This machine looks offline: "
            "download the model on a machine with internet (`cosyagent models download NAME --dir DIR`) "
            "and copy the directory here, or mount it into the container."
        ) from exc


def download(name: str, root: Path, hub: str = "huggingface", base_url: str | None = None) -> Path:
    """Download (or resume) one model into ``root/name``; returns the directory."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelStoreError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if hub not in HUB_URLS:
        raise ModelStoreError(f"hub must be one of {', '.join(HUB_URLS)}")
    url = base_url or os.environ.get("HF_ENDPOINT" if hub == "huggingface" else "MODELSCOPE_DOMAIN") or HUB_URLS[hub]
    probe(url)
    target = root / spec.name
    target.mkdir(parents=True, exist_ok=True)
    try:
        if hub == "huggingface":
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=spec.huggingface, local_dir=str(target), endpoint=url)  # resumes, tqdm bars
        else:
            try:
                from modelscope import snapshot_download as ms_download
            except ImportError as exc:
                raise ModelStoreError("the modelscope hub needs `pip install modelscope`") from exc
            ms_download(spec.modelscope, local_dir=str(target))
    except ModelStoreError:
        raise
    except Exception as exc:  # hub clients raise their own HTTP/OS error trees
        raise ModelStoreError(f"downloading {name} from {url} failed: {exc} (run it again to resume)") from exc
    missing = [f for f in spec.required if not (target / f).is_file()]
    if missing:
        raise ModelStoreError(f"{target} is still missing {missing} after the download")
    return target
