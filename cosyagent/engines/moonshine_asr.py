"""English speech recognition with Moonshine base-en on onnxruntime: fast on short utterances.

Whisper encodes a 30 s window whatever the utterance; Moonshine's encoder takes the audio as
it is, so a 3 s question costs a tenth of the encoder work. The weights come from the
``moonshine-cpp`` package, checked and converted once to plain ONNX
(:mod:`cosyagent.engines.moonshine_files`); nothing is downloaded.

Decoding is greedy with a KV cache. Moonshine repeats itself or invents text when left to run
past the speech, so each window may produce at most :data:`TOKENS_PER_SECOND` tokens per second
of audio (upstream's bound too). Audio longer than ``max_window_s`` is cut at its pauses and
decoded window by window (one segment each): on long windows Moonshine loops and is slower
than Whisper. Moonshine has no timestamps: a segment spans its window.

A decoder step is ~900 small kernels: overhead, not arithmetic, so checking a dozen tokens in
one pass costs about what two steps do. Given a *draft* (its own tokens for an earlier take of
the audio's beginning, ``Transcript.tokens``), it runs the decoder once over the draft and keeps
the tokens it would have chosen itself, then decodes the rest step by step: a 3 s question whose
draft holds most of its words takes ~60 instead of ~130 ms.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cosyagent.audio.pauses import split_at_pauses
from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineError,
    EngineExecutor,
    EngineInfo,
    EngineUnavailableError,
    Transcript,
    TranscriptSegment,
)
from cosyagent.engines.moonshine_files import PACKAGE, Tokenizer, onnx_models
from cosyagent.engines.native_memory import lean_onnx_options
from cosyagent.engines.onnx_cancel import terminable_run_options

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16_000
TOKENS_PER_SECOND = 6.0
MIN_TOKENS = 8  # a short "Okay, thank you." still fits
_MIN_SAMPLES = _SAMPLE_RATE // 10  # the encoder's convolutions need ~0.06 s; shorter audio is padded with silence
_START, _END = 1, 2  # <s>, </s>
_HEADS, _HEAD_SIZE = 8, 52  # base-en's decoder attention


def max_new_tokens(duration_s: float) -> int:
    """The most tokens one window of ``duration_s`` may produce."""
    return max(MIN_TOKENS, math.ceil(duration_s * TOKENS_PER_SECOND))


def _base_language(tag: str) -> str:
    return tag.strip().lower().replace("_", "-").split("-")[0]


class MoonshineASR:
    """Moonshine base-en (int8 weights) on the CPU: greedy, one worker thread shared by every session."""

    name = "moonshine"
    sample_rate: int = _SAMPLE_RATE
    info = EngineInfo(name, "moonshine-base-en", _SAMPLE_RATE, languages=("en",), checks_drafts=True)

    def __init__(
        self,
        *,
        cpu_threads: int = 2,
        max_window_s: float = 20.0,
        model_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        """``model_dir``: a folder with moonshine-cpp's base-en files (default: the installed package's);
        ``cache_dir``: where the converted ONNX files go (default ``$COSYAGENT_CACHE_DIR/moonshine``)."""
        if cpu_threads < 1:
            raise ValueError("cpu_threads must be at least 1")
        if not 1.0 <= max_window_s <= 60.0:
            raise ValueError("max_window_s must be between 1 and 60 seconds")
        self.cpu_threads = cpu_threads
        self.max_window_s = max_window_s
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._encoder: ort.InferenceSession | None = None
        self._decoder: ort.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._past_names: list[str] = []
        self._cached_outputs: list[str] = []  # on a cached step: the logits and the self-attention cache only
        self._executor = EngineExecutor("asr")

    @property
    def loaded(self) -> bool:
        return self._decoder is not None

    @property
    def queue_depth(self) -> int:
        return self._executor.queue_depth

    def load(self) -> None:
        """Check and convert the weights (first time only), open both graphs, warm up (blocking; once)."""
        if self._decoder is not None:
            return
        import onnxruntime as ort

        started = time.perf_counter()
        files = onnx_models(self._model_dir, self._cache_dir)
        options = lean_onnx_options(ort.SessionOptions())  # every utterance and decoder step has a new shape
        options.intra_op_num_threads = self.cpu_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Threads that spin between the decoder's many small runs take the cores from everything
        # else; on 2 shared cores, spinning made a 2.8 s question 1.6x slower (no spinning: 1.54 s, spinning: 2.45 s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            encoder = ort.InferenceSession(str(files.encoder), sess_options=options, providers=["CPUExecutionProvider"])
            decoder = ort.InferenceSession(str(files.decoder), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a corrupt cache file: onnxruntime raises its own Fail/InvalidGraph types
            raise EngineUnavailableError(
                f"cannot load Moonshine from {files.encoder.parent} ({exc}); delete that folder to convert "
                f"the files of {PACKAGE} again"
            ) from exc
        self._tokenizer = Tokenizer.load(files.tokenizer)
        self._past_names = [i.name for i in decoder.get_inputs() if i.name.startswith("past_key_values.")]
        outputs = [o.name for o in decoder.get_outputs()]
        self._cached_outputs = [outputs[0], *(name for name in outputs[1:] if ".decoder." in name)]
        self._encoder, self._decoder = encoder, decoder
        loaded_s = time.perf_counter() - started
        noise = np.random.default_rng(0).normal(0.0, 0.01, _SAMPLE_RATE).astype(np.float32)
        self._run(noise, None)
        logger.info(
            "Moonshine loaded in %.2f s, warmed up in %.2f s", loaded_s, time.perf_counter() - started - loaded_s
        )

    async def transcribe(
        self,
        audio: AudioF32,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        draft: Transcript | None = None,
    ) -> Transcript:
        """Transcribe mono float32 16 kHz audio. ``prompt`` is accepted and ignored (Moonshine takes none);
        ``draft``: an earlier transcript of this audio's beginning, checked instead of decoded (see above).

        Raises :class:`EngineError` for a language other than English,
        :class:`~cosyagent.engines.base.EngineCancelled` when ``cancel`` fires (the running
        ONNX call is terminated; the decode loop also checks it between tokens). Cancelling
        the awaiting task alone does not stop a decode already running: fire the token.
        """
        if language is not None and _base_language(language) not in self.info.languages:
            raise EngineError(f"MoonshineASR transcribes {', '.join(self.info.languages)} only, not {language!r}")
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise EngineError(f"expected mono audio (1-D), got shape {samples.shape}")
        if self._decoder is None:
            raise EngineUnavailableError("MoonshineASR.load() has not been called")
        if samples.size == 0:
            return Transcript(text="", language="en", duration_s=0.0)
        drafted = draft.tokens if draft is not None else ()
        return await self._executor.run(lambda: self._run(samples, cancel, drafted), cancel)

    def _run(self, audio: AudioF32, cancel: CancelToken | None, draft: tuple[int, ...] = ()) -> Transcript:
        """Decode window by window in the worker thread (a draft serves a single window only)."""
        started = time.perf_counter()
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise EngineUnavailableError("MoonshineASR is closed")
        segments: list[TranscriptSegment] = []
        windows = split_at_pauses(audio, _SAMPLE_RATE, self.max_window_s)
        tokens: list[int] = []
        with terminable_run_options(cancel) as options:
            for start, end in windows:
                tokens = self._decode_window(audio[start:end], options, cancel, draft if len(windows) == 1 else ())
                text = tokenizer.decode(tokens)
                spoken = f" {text}" if text else ""  # as Whisper's segments: each begins with its space
                segments.append(TranscriptSegment(start / _SAMPLE_RATE, end / _SAMPLE_RATE, spoken))
        duration_s = audio.size / _SAMPLE_RATE
        logger.debug("transcribed %.2f s of audio in %.3f s", duration_s, time.perf_counter() - started)
        text = "".join(s.text for s in segments).strip()
        kept = tuple(tokens) if len(windows) == 1 else ()
        return Transcript(text=text, language="en", duration_s=duration_s, segments=tuple(segments), tokens=kept)

    def _decode_window(
        self, audio: AudioF32, options: ort.RunOptions, cancel: CancelToken | None, draft: tuple[int, ...]
    ) -> list[int]:
        encoder, decoder = self._encoder, self._decoder
        if encoder is None or decoder is None:
            raise EngineUnavailableError("MoonshineASR is closed")
        limit = max_new_tokens(audio.size / _SAMPLE_RATE)
        if audio.size < _MIN_SAMPLES:
            audio = np.pad(audio, (0, _MIN_SAMPLES - audio.size))
        hidden = _run_graph(encoder, None, {"input_values": audio[None, :]}, options)[0]
        empty = np.zeros((1, _HEADS, 0, _HEAD_SIZE), dtype=np.float32)
        feed: dict[str, NDArray[Any]] = {
            "input_ids": np.array([[_START]], dtype=np.int64),
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.array([False]),
            **dict.fromkeys(self._past_names, empty),
        }
        tokens = self._check_draft(feed, draft[:limit], options)
        # A first step (no draft kept) also returns the cross-attention cache.
        fetch: list[str] | None = self._cached_outputs if tokens else None
        while len(tokens) < limit:
            if cancel is not None:
                cancel.raise_if_cancelled()
            names = fetch or [o.name for o in decoder.get_outputs()]
            outputs = _run_graph(decoder, names, feed, options)
            token = int(np.argmax(outputs[0][0, -1]))
            if token == _END:
                break
            tokens.append(token)
            self._keep_cache(feed, names, outputs)
            feed["input_ids"] = np.array([[token]], dtype=np.int64)
            feed["use_cache_branch"] = np.array([True])
            fetch = self._cached_outputs
        else:
            logger.info(
                "Moonshine stopped at its bound of %d tokens for %.1f s of audio", limit, audio.size / _SAMPLE_RATE
            )
        return tokens

    def _check_draft(self, feed: dict[str, NDArray[Any]], draft: tuple[int, ...], options: ort.RunOptions) -> list[int]:
        """One decoder pass over ``<s>`` and the draft: the draft's tokens up to the first one the
        decoder would not have chosen. ``feed`` is left ready for the step after the last of them
        (its input that token, the cache up to before it), so the token after the draft is chosen
        by a single step, as without one. None accepted: ``feed`` is left as it was."""
        decoder = self._decoder
        if not draft or decoder is None:
            return []
        names = [o.name for o in decoder.get_outputs()]
        checked = {**feed, "input_ids": np.array([[_START, *draft]], dtype=np.int64)}
        outputs = _run_graph(decoder, names, checked, options)
        chosen = np.argmax(outputs[0][0], axis=-1)  # chosen[i]: the token after <s> and draft[:i]
        accepted = 0
        while accepted < len(draft) and int(chosen[accepted]) == draft[accepted]:
            accepted += 1
        if accepted == 0:
            return []
        self._keep_cache(feed, names, outputs, self_attention_length=accepted)
        feed["input_ids"] = np.array([[draft[accepted - 1]]], dtype=np.int64)
        feed["use_cache_branch"] = np.array([True])
        return list(draft[:accepted])

    @staticmethod
    def _keep_cache(
        feed: dict[str, NDArray[Any]],
        names: list[str],
        outputs: list[NDArray[Any]],
        self_attention_length: int | None = None,
    ) -> None:
        """Feed a run's present key/values back as the next run's past, the self-attention ones
        cut to ``self_attention_length`` positions when given (the cross-attention ones are the audio's)."""
        for name, value in zip(names[1:], outputs[1:], strict=True):
            if self_attention_length is not None and ".decoder." in name:
                value = value[:, :, :self_attention_length]
            feed[name.replace("present.", "past_key_values.", 1)] = value

    def close(self) -> None:
        self._executor.shutdown()
        self._encoder = self._decoder = None


def _run_graph(
    session: ort.InferenceSession,
    outputs: list[str] | None,
    feed: dict[str, NDArray[Any]],
    options: ort.RunOptions,
) -> list[NDArray[Any]]:
    try:
        return list(session.run(outputs, feed, run_options=options))
    except Exception as exc:  # (cancelled: terminable_run_options turns it into EngineCancelled)
        raise EngineError(f"Moonshine failed: {exc}") from exc
