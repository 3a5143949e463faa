"""Fun-CosyVoice3-0.5B speech synthesis (GPU): streaming output, bi-streaming text input, cached speakers.

CosyVoice is not on the package registry: it is installed from its repository at a pinned
commit (see ``COSYVOICE_COMMIT``) and imported lazily in :meth:`CosyVoiceTTS.load`. Voices
are speakers in the model's ``spk2info``: the configured prompt voice is registered once
with ``add_zero_shot_spk`` and saved with ``save_spkinfo``; user voices come from the voice
library, whose cached features are put back at startup. A request never extracts prompt
features: it looks its speaker up. Each request runs :func:`stream_speech` in a worker
thread of its own (at most ``max_concurrency`` at once, the rest queue, up to ``max_queue``).
Word and viseme times are estimated, the model has no alignment (:meth:`CosyVoiceTTS.synthesize_timed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineCancelled,
    EngineError,
    EngineInfo,
    EngineUnavailableError,
)
from cosyagent.engines.cosyvoice_stream import ChunkSchedule, TextFeed, pump_text, stream_speech
from cosyagent.engines.estimated_timings import estimate_timings
from cosyagent.engines.own_slots import OwnSlots
from cosyagent.engines.timings import TimedAudio

logger = logging.getLogger(__name__)

COSYVOICE_REPO = "https://github.com/FunAudioLLM/CosyVoice.git"
COSYVOICE_COMMIT = "ace7c47"  # Merge pull request #1850 (CosyVoice3 bi-streaming, add_zero_shot_spk)
REQUIRED_FILES = ("cosyvoice3.yaml", "llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v3.onnx")
END_OF_PROMPT = "<|endofprompt|>"
_SYSTEM = "You are a helpful assistant."
_SAMPLE_RATE = 24_000
_DONE = object()


def prompt_text(text: str) -> str:
    """CosyVoice3 prompt text must carry ``<|endofprompt|>``: add the usual system line if missing."""
    return text if END_OF_PROMPT in text else f"{_SYSTEM}{END_OF_PROMPT}{text}"


def instruct_text(instruct: str) -> str:
    """An instruction (style, dialect, speed in words) in CosyVoice3's prompt form."""
    return instruct if END_OF_PROMPT in instruct else f"{_SYSTEM} {instruct}{END_OF_PROMPT}"


def missing_model_files(model_dir: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]


class CosyVoiceTTS:
    """CosyVoice3 behind :class:`~cosyagent.engines.base.SpeechSynthesizer` and ``synthesize_stream``."""

    name = "cosyvoice3"
    sample_rate: int = _SAMPLE_RATE
    info = EngineInfo(
        name,
        "fun-cosyvoice3-0.5b-2512",
        _SAMPLE_RATE,
        speed_range=(0.5, 2.0),
        streams_text=True,
        can_clone=True,
        times_words=True,  # estimated: see synthesize_timed
        follows_instructions=True,  # its instruct mode: "Speak cheerfully.", "用四川话说"
    )

    def __init__(
        self,
        model_dir: str | Path,
        *,
        prompt_wav: str | Path | None = None,
        prompt_text: str | None = None,
        default_voice: str = "default",
        instruct: str | None = None,
        max_concurrency: int = 4,
        max_queue: int = 32,
        fp16: bool = False,
        load_trt: bool = False,
    ) -> None:
        if (prompt_wav is None) != (prompt_text is None):
            raise ValueError("prompt_wav and prompt_text go together")
        self.model_dir = Path(model_dir).expanduser()
        self._prompt_wav = Path(prompt_wav).expanduser() if prompt_wav is not None else None
        self._prompt_text = prompt_text
        self.default_voice = default_voice
        self.instruct = instruct
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._fp16 = fp16
        self._load_trt = load_trt
        self._model: Any = None
        self._schedule = ChunkSchedule(first_hop=25, max_hop=100, scale=2, lookahead=3)
        self._slots = OwnSlots("CosyVoice", max_concurrency, max_queue)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="engine-cosyvoice")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def queue_depth(self) -> int:
        """Requests generating plus requests waiting for a slot."""
        return self._slots.queue_depth

    @property
    def foreground_jobs_started(self) -> int:
        return self._slots.foreground_jobs_started

    def load(self) -> None:
        """Load the model, register the prompt voice (once, then cached in spk2info.pt), warm up. Blocking."""
        if self._model is not None:
            return
        if not self.model_dir.is_dir():
            raise EngineUnavailableError(
                f"CosyVoice3 model directory {self.model_dir} does not exist; "
                "run `cosyagent models download Fun-CosyVoice3-0.5B-2512` or set tts.model_dir"
            )
        missing = missing_model_files(self.model_dir)
        if missing:
            raise EngineUnavailableError(f"CosyVoice3 model in {self.model_dir} is incomplete: missing {missing}")
        started = time.perf_counter()
        try:
            from cosyvoice.cli.cosyvoice import AutoModel
        except ImportError as exc:
            raise EngineUnavailableError(
                f"CosyVoice is not installed: install {COSYVOICE_REPO} at commit {COSYVOICE_COMMIT} "
                f"(see docs: production stack): {exc}"
            ) from exc
        try:
            model = AutoModel(model_dir=str(self.model_dir), fp16=self._fp16, load_trt=self._load_trt)
        except Exception as exc:  # upstream raises ValueError/TypeError/AssertionError/torch errors
            raise EngineUnavailableError(f"cannot load CosyVoice3 from {self.model_dir}: {exc}") from exc
        inner = model.model
        self._schedule = ChunkSchedule(
            first_hop=int(inner.token_hop_len),  # read once; upstream's tts() mutates it, we never do
            max_hop=int(inner.token_max_hop_len),
            scale=int(inner.stream_scale_factor),
            lookahead=int(inner.flow.pre_lookahead_len),
        )
        self._model = model
        self._register_prompt_voice(model)
        loaded_s = time.perf_counter() - started
        if self.default_voice in self.voices():
            for _ in self._speak("Hello.", None, self.default_voice, 1.0, CancelToken(), None):
                pass
        logger.info(
            "CosyVoice3 loaded in %.2f s, warmed up in %.2f s (%d voices)",
            loaded_s,
            time.perf_counter() - started - loaded_s,
            len(self.voices()),
        )

    def _register_prompt_voice(self, model: Any) -> None:
        if self._prompt_wav is None or self.default_voice in model.frontend.spk2info:
            return  # preloaded from spk2info.pt: no prompt extraction at startup either
        if not self._prompt_wav.is_file():
            raise EngineUnavailableError(f"tts.prompt_wav {self._prompt_wav} does not exist")
        assert self._prompt_text is not None  # checked in __init__
        try:
            model.add_zero_shot_spk(prompt_text(self._prompt_text), str(self._prompt_wav), self.default_voice)
        except Exception as exc:
            raise EngineUnavailableError(f"cannot extract the prompt voice from {self._prompt_wav}: {exc}") from exc
        try:
            model.save_spkinfo()
        except OSError as exc:  # a read-only model volume: the voice works, the next start extracts again
            logger.warning("cannot save spk2info.pt in %s: %s", self.model_dir, exc)

    # --- voices -----------------------------------------------------------------------------

    def voices(self) -> list[str]:
        return sorted(self._model.frontend.spk2info) if self._model is not None else []

    def extract_features(self, audio: AudioF32, sample_rate: int, text: str) -> dict[str, npt.NDArray[Any]]:
        """Speaker features of a clip (blocking; the only place prompt extraction happens)."""
        model = self._require_model()
        import soundfile as sf

        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            sf.write(wav.name, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
            try:
                features = model.frontend.frontend_zero_shot("", prompt_text(text), wav.name, _SAMPLE_RATE, "")
            except Exception as exc:
                raise EngineError(f"CosyVoice cannot use this clip: {exc}") from exc
        features.pop("text", None)
        features.pop("text_len", None)
        return {key: value.detach().cpu().numpy() for key, value in features.items()}

    def add_voice(self, name: str, features: Mapping[str, npt.NDArray[Any]]) -> None:
        """Register cached speaker features under ``name`` (no extraction)."""
        model = self._require_model()
        needed = {
            "prompt_text",
            "llm_prompt_speech_token",
            "flow_prompt_speech_token",
            "prompt_speech_feat",
            "llm_embedding",
            "flow_embedding",
        }
        if not needed <= set(features):
            raise EngineError(f"CosyVoice speaker features need {sorted(needed - set(features))}")
        import torch

        model.frontend.spk2info[name] = {
            key: torch.from_numpy(np.asarray(value)).to(model.frontend.device) for key, value in features.items()
        }

    def remove_voice(self, name: str) -> None:
        if self._model is not None:
            self._model.frontend.spk2info.pop(name, None)

    # --- synthesis --------------------------------------------------------------------------

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        instruct: str | None = None,
    ) -> AsyncGenerator[AudioF32, None]:
        """Yield 24 kHz chunks as they are made (the first after ~one chunk of speech tokens)."""
        if not text.strip():
            raise EngineError("nothing to synthesize")
        return self._generate(text, voice, speed, cancel, instruct)

    async def synthesize_timed(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        instruct: str | None = None,
    ) -> AsyncGenerator[TimedAudio, None]:
        """All of ``text``'s audio as one chunk, with *estimated* word and phoneme times.

        The model has no alignment: the times are placed on the finished audio by its energy and
        the words' expected lengths (:mod:`~cosyagent.engines.estimated_timings`), so nothing comes
        out before the whole text is made: give it a clause at a time.
        """
        stream = self.synthesize(text, voice=voice, speed=speed, cancel=cancel, instruct=instruct)
        async with contextlib.aclosing(stream):
            chunks = [chunk async for chunk in stream]
        if chunks and not (cancel is not None and cancel.cancelled):
            yield await asyncio.to_thread(estimate_timings, np.concatenate(chunks), _SAMPLE_RATE, text)

    def synthesize_stream(
        self,
        text: AsyncIterator[str],
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        instruct: str | None = None,
    ) -> AsyncGenerator[AudioF32, None]:
        """Bi-streaming: ``text`` deltas reach the model's LLM as they arrive; audio starts before the end."""
        return self._generate(text, voice, speed, cancel, instruct)

    async def _generate(
        self,
        source: str | AsyncIterator[str],
        voice: str,
        speed: float,
        cancel: CancelToken | None,
        instruct: str | None,
    ) -> AsyncGenerator[AudioF32, None]:
        self._require_model()
        if voice not in self._model.frontend.spk2info:
            raise EngineError(f"unknown voice {voice!r}; available voices: {', '.join(self.voices()) or 'none'}")
        self.info.check_speed(speed)
        token = CancelToken()
        unlink = cancel.on_cancel(token.cancel) if cancel is not None else (lambda: None)
        feed = TextFeed() if not isinstance(source, str) else None
        pump: asyncio.Task[None] | None = None
        try:
            loop = asyncio.get_running_loop()
            out: asyncio.Queue[object] = asyncio.Queue()
            text = source if isinstance(source, str) else None
            work = self._worker(loop, out, text, feed, voice, speed, token, instruct or self.instruct)
            free = await self._slots.take(token)
            try:
                job = loop.run_in_executor(self._pool, work)
            except BaseException:
                free()
                raise
            job.add_done_callback(lambda _: free())
            if feed is not None:
                assert not isinstance(source, str)
                pump = asyncio.create_task(pump_text(source, feed), name="cosyvoice-text")
            while (item := await out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                if token.cancelled:
                    return
                yield item  # type: ignore[misc]
            if pump is not None:
                await pump  # the LLM's error, if it failed mid-reply
        finally:
            token.cancel()  # the worker stops within one chunk and frees its state
            if feed is not None:
                feed.abort()
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            unlink()

    def _worker(
        self,
        loop: asyncio.AbstractEventLoop,
        out: asyncio.Queue[object],
        text: str | None,
        feed: TextFeed | None,
        voice: str,
        speed: float,
        cancel: CancelToken,
        instruct: str | None,
    ) -> Callable[[], None]:
        def post(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(out.put_nowait, item)

        def run() -> None:
            try:
                for audio in self._speak(text, feed, voice, speed, cancel, instruct):
                    post(audio)
            except EngineCancelled:
                pass
            except EngineError as exc:
                post(exc)
            except Exception as exc:  # noqa: BLE001  (foreign errors translated at the boundary)
                post(EngineError(f"CosyVoice failed: {exc}"))
            finally:
                post(_DONE)

        return run

    def _speak(
        self,
        text: str | None,
        feed: TextFeed | None,
        voice: str,
        speed: float,
        cancel: CancelToken,
        instruct: str | None,
    ) -> Iterator[AudioF32]:
        """Blocking: pieces of text (or the live feed) through the frontend and :func:`stream_speech`."""
        model = self._require_model()
        pieces: list[Any] = (
            [feed.generator()]
            if feed is not None
            else list(model.frontend.text_normalize(text, split=True, text_frontend=True))
        )
        for piece in pieces:
            cancel.raise_if_cancelled()
            model_input = model.frontend.frontend_zero_shot(piece, "", None, _SAMPLE_RATE, voice)  # cached speaker
            if instruct:
                prompt, prompt_len = model.frontend._extract_text_token(instruct_text(instruct))
                model_input.update(prompt_text=prompt, prompt_text_len=prompt_len)
                model_input.pop("llm_prompt_speech_token", None)  # as upstream's instruct2: no speech prompt
                model_input.pop("llm_prompt_speech_token_len", None)
            yield from stream_speech(
                model.model,
                model_input,
                self._schedule,
                stream=speed == 1.0,  # upstream's streaming vocoder cannot change speed
                speed=speed,
                cancel=cancel,
                text_feed=feed,
            )

    def _require_model(self) -> Any:
        if self._model is None:
            raise EngineUnavailableError("CosyVoiceTTS.load() has not been called")
        return self._model

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._model = None
