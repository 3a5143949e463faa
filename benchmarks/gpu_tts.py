"""CosyVoice3 on a GPU: first-packet latency, real-time factor, concurrency 1/2/4/8/16, cached vs uncached speakers.

    python benchmarks/gpu_tts.py --model-dir /models/Fun-CosyVoice3-0.5B-2512 \
        --prompt-wav /opt/CosyVoice/asset/zero_shot_prompt.wav --prompt-text "希望你以后能够做的比我还好呦。"

"cached": our engine (speaker registered once, our streaming loop). "uncached": upstream's
``inference_zero_shot(..., prompt_wav)`` per request, which extracts the prompt every time.
Needs CosyVoice installed (Dockerfile.gpu) and a CUDA GPU; nothing runs here on a CPU box.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import Any

from cosyagent.engines.cosyvoice_tts import CosyVoiceTTS, prompt_text

TEXT = "Hello! Thanks for calling. The museum opens at nine in the morning and closes at five in the evening."
REFERENCE = [
    ("CosyVoice All-in-One Docker image, L40S, concurrency 1", "1.2 s first packet"),
    ("claimed, A100 with vLLM", "180 ms first packet"),
    ("CosyVoice2 + TensorRT-LLM, L20", "190-220 ms first packet"),
]


async def _cached_once(tts: CosyVoiceTTS) -> tuple[float, float, float]:
    started = time.perf_counter()
    first = None
    samples = 0
    async for chunk in tts.synthesize(TEXT, voice="bench"):
        first = first if first is not None else time.perf_counter() - started
        samples += chunk.size
    wall = time.perf_counter() - started
    return first or wall, wall, samples / tts.sample_rate


def _uncached_once(model: Any, wav: str, text: str, lock: threading.Lock) -> tuple[float, float, float]:
    started = time.perf_counter()
    first = None
    samples = 0
    for out in model.inference_zero_shot(TEXT, prompt_text(text), wav, stream=True):
        first = first if first is not None else time.perf_counter() - started
        samples += out["tts_speech"].shape[1]
    wall = time.perf_counter() - started
    return first or wall, wall, samples / model.sample_rate


def _report(label: str, concurrency: int, runs: list[tuple[float, float, float]]) -> None:
    firsts = sorted(r[0] for r in runs)
    rtf = statistics.mean(r[1] / r[2] for r in runs if r[2] > 0)
    p90 = firsts[min(len(firsts) - 1, int(0.9 * len(firsts)))]
    print(
        f"{label:9} c={concurrency:<3} first packet p50 {statistics.median(firsts) * 1000:7.0f} ms  "
        f"p90 {p90 * 1000:7.0f} ms  RTF {rtf:5.2f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--prompt-wav", required=True)
    parser.add_argument("--prompt-text", required=True)
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=3, help="requests per concurrent client")
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    tts = CosyVoiceTTS(
        args.model_dir,
        prompt_wav=args.prompt_wav,
        prompt_text=args.prompt_text,
        default_voice="bench",
        max_concurrency=max(levels),
        max_queue=1024,
        fp16=args.fp16,
    )
    tts.load()
    for c in levels:

        async def client() -> list[tuple[float, float, float]]:
            return [await _cached_once(tts) for _ in range(args.rounds)]

        results = await asyncio.gather(*(client() for _ in range(c)))
        _report("cached", c, [r for runs in results for r in runs])
    model = tts._model
    lock = threading.Lock()
    for c in levels:
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(None, _uncached_once, model, args.prompt_wav, args.prompt_text, lock)
            for _ in range(c * args.rounds)
        ]
        _report("uncached", c, list(await asyncio.gather(*jobs)))
    print("\nfor comparison (not measured here):")
    for where, value in REFERENCE:
        print(f"  {value:24} {where}")
    tts.close()


if __name__ == "__main__":
    asyncio.run(main())
