"""How far the model outputs that the tests assert on move between CPU kernels.

onnxruntime and CTranslate2 pick their int8 kernels by instruction set (AVX-512, AVX2...), so a
model's score differs a little from one CPU to the next. No switch forces onnxruntime's kernel
choice, but its graph optimisation level changes which fused int8 kernels run, and CTranslate2
obeys ``CT2_FORCE_CPU_ISA``; this script runs the engines under each setting this CPU supports
(in a fresh process each, since both libraries read the setting once) and prints every asserted
value beside its test's bound. A test bound must hold with a margin under all of them.

    python -m benchmarks.kernel_variance
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import numpy as np

# (label, environment): onnxruntime's setting is read by _measure below, CTranslate2's by itself.
VARIANTS = [
    ("ort-all/ct2-auto", {}),
    ("ort-basic", {"MEASURE_ORT_OPT": "basic"}),
    ("ort-off", {"MEASURE_ORT_OPT": "disable"}),
    ("ct2-AVX", {"CT2_FORCE_CPU_ISA": "AVX"}),
    ("ct2-GENERIC", {"CT2_FORCE_CPU_ISA": "GENERIC"}),
]
KOKORO_TEXT = "Hello, this is a test of the speech synthesizer."
SMART_TURN_CUTS = [  # (clip, seconds, the test's bound)
    ("en_dublin_q.wav", 2.6, "> 0.8"),
    ("en_dublin_q.wav", 1.5, "< 0.3"),
    ("en_wealth_tax_q.wav", 2.75, "< 0.3"),
    ("en_philosophy_22s.wav", 12.5, "< 0.3"),
]


def _force_ort_optimisation() -> None:
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    level = levels.get(os.environ.get("MEASURE_ORT_OPT", ""))
    if level is None:
        return
    base = ort.SessionOptions

    class Options(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.graph_optimization_level = level

    ort.SessionOptions = Options


def _measure() -> dict[str, float]:
    _force_ort_optimisation()
    from cosyagent.audio.pcm import resample
    from cosyagent.engines.kokoro_tts import KokoroTTS
    from cosyagent.engines.smart_turn import SAMPLE_RATE, SmartTurn
    from cosyagent.engines.vad import SileroVAD
    from cosyagent.engines.whisper_asr import WhisperASR
    from tests.support import REFERENCES, read_clip, word_error_rate

    values: dict[str, float] = {}
    smart_turn = SmartTurn()
    smart_turn.load()
    for clip, seconds, bound in SMART_TURN_CUTS:
        audio = read_clip(clip, SAMPLE_RATE)[: int(seconds * SAMPLE_RATE)]
        values[f"smart turn {clip} @{seconds}s ({bound})"] = smart_turn.predict(audio)
    vad = SileroVAD()
    vad.load()
    stream, speech = vad.new_stream(), read_clip("en_dublin_q.wav", 16_000)
    probabilities = [stream.speech_probability(speech[i : i + 512]) for i in range(0, speech.size - 511, 512)]
    values["silero dublin max (> 0.5)"] = max(probabilities)
    values["silero dublin frames > 0.5 (>= 10)"] = sum(p > 0.5 for p in probabilities)

    async def recognise() -> None:
        asr = WhisperASR()
        asr.load()
        for clip, reference in REFERENCES.items():
            result = await asr.transcribe(read_clip(clip, 16_000), language="en")
            values[f"whisper WER {clip}"] = word_error_rate(reference, result.text)
        tts = KokoroTTS()
        tts.load()
        audio = np.concatenate([c async for c in tts.synthesize(KOKORO_TEXT, voice="jf_alpha")])
        heard = await asr.transcribe(resample(audio, tts.sample_rate, asr.sample_rate))
        values["kokoro -> whisper WER (<= 0.3)"] = word_error_rate(KOKORO_TEXT, heard.text)

    asyncio.run(recognise())
    return values


def main() -> int:
    if os.environ.get("_KERNEL_VARIANCE_CHILD"):
        print(json.dumps(_measure()))
        return 0
    columns: dict[str, dict[str, float]] = {}
    for label, env in VARIANTS:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.kernel_variance"],
            env={**os.environ, **env, "_KERNEL_VARIANCE_CHILD": "1", "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        columns[label] = json.loads(child.stdout.strip().splitlines()[-1])
    names = list(next(iter(columns.values())))
    width = max(len(n) for n in names)
    print(f"{'value (test bound)':<{width}}  " + "  ".join(f"{label:>16}" for label in columns))
    for name in names:
        print(f"{name:<{width}}  " + "  ".join(f"{columns[label][name]:>16.3f}" for label in columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
