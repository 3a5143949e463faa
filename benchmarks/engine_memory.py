"""One speech engine alone, called over and over on real clips, with this process's RSS read every N calls.

Tells which engine's native memory grows, and whether it settles (allocator high-water
marks, arenas) or keeps climbing (a leak), without a server, an LLM or other engines in the
way. The engines run as the server runs them (``load()`` once, then their async API on their
own worker threads). ``asr``: Whisper tiny.en on four English clips; ``lid``: the language
check on those and a Mandarin one; ``vad``: a fresh Silero stream per clip, every 512-sample
frame; ``turn``: Smart Turn on the clips; ``tts``: Piper on four English replies.

    python -m benchmarks.engine_memory tts --calls 40 --every 10

Environment knobs for experiments are the C library's own (``MALLOC_ARENA_MAX=2``...): set
them on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from cosyagent.audio.pcm import AudioF32, resample

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
ENGLISH = ("en_dublin_q", "en_wealth_tax_q", "en_news_movement_8k", "en_philosophy_22s")
REPLIES = (
    "Sure, I can help with that.",
    "The capital of France is Paris, a city on the Seine.",
    "Here is a short tip: go to bed at the same time every night, and keep your room dark and cool.",
    "Two hours is one hundred and twenty minutes.",
)
ENGINES = ("asr", "lid", "vad", "turn", "tts")


def rss_mib() -> tuple[float, float]:
    """(VmRSS, RssAnon) of this process in MiB: anonymous memory is where heaps live."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024


def clips(names: tuple[str, ...]) -> list[AudioF32]:
    out = []
    for name in names:
        audio, rate = sf.read(DATA / f"{name}.wav", dtype="float32")
        out.append(resample(np.asarray(audio, dtype=np.float32), int(rate), 16_000))
    return out


def engine_call(name: str) -> Callable[[int], Awaitable[None]]:
    """Load engine ``name`` and return its i-th call."""
    english = clips(ENGLISH)
    if name == "asr":
        from cosyagent.engines.whisper_asr import WhisperASR

        asr = WhisperASR()
        asr.load()
        return lambda i: _discard(asr.transcribe(english[i % len(english)]))
    if name == "lid":
        from cosyagent.engines.language_id import SpokenLanguageID

        lid = SpokenLanguageID()
        lid.load()
        every = [*english, *clips(("zh_sample_6s",))]
        return lambda i: _discard(lid.identify(every[i % len(every)]))
    if name == "vad":
        from cosyagent.engines.vad import SileroVAD

        vad = SileroVAD()
        vad.load()

        async def frames(i: int) -> None:
            stream, clip = vad.new_stream(), english[i % len(english)]
            for start in range(0, clip.size - vad.frame_samples + 1, vad.frame_samples):
                stream.speech_probability(clip[start : start + vad.frame_samples])

        return frames
    if name == "turn":
        from cosyagent.engines.smart_turn import SmartTurn

        turn = SmartTurn()
        turn.load()
        return lambda i: _discard(turn.probability(english[i % len(english)]))
    from cosyagent.engines.piper_tts import PiperTTS

    tts = PiperTTS()
    tts.load()

    async def speak(i: int) -> None:
        async for _ in tts.synthesize(REPLIES[i % len(REPLIES)], voice=tts.voice_name):
            pass

    return speak


async def _discard(call: Awaitable[object]) -> None:
    await call


async def measure(name: str, calls: int, every: int) -> None:
    call = engine_call(name)
    started, (base, _) = time.monotonic(), rss_mib()
    print(f"| {name} calls | RSS MiB | growth MiB | anonymous MiB | s |\n|---|---|---|---|---|")
    print(f"| 0 (loaded, warmed up) | {base:.1f} | 0 | {rss_mib()[1]:.1f} | 0 |")
    for i in range(1, calls + 1):
        await call(i)
        if i % every == 0:
            gc.collect()
            await asyncio.sleep(0.05)  # the engine's worker thread finishes what it queued behind the call
            rss, anon = rss_mib()
            print(
                f"| {i} | {rss:.1f} | {rss - base:+.1f} | {anon:.1f} | {time.monotonic() - started:.0f} |", flush=True
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--calls", type=int, default=100, help="calls in all (default 100)")
    parser.add_argument("--every", type=int, default=10, help="read RSS every this many calls (default 10)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.every < 1:
        parser.error("--calls and --every must be at least 1")
    asyncio.run(measure(args.engine, args.calls, args.every))


if __name__ == "__main__":
    main()
