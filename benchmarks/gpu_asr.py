"""Fun-ASR-Nano latency per utterance on a GPU (or a CPU, slowly).

python benchmarks/gpu_asr.py --model-dir /models/Fun-ASR-Nano-2512 ../shared/audio/*.wav
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np
import soundfile as sf
import soxr

from cosyagent.engines.funasr_asr import FunASRNano


def _read(path: str) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return np.asarray(soxr.resample(mono, rate, 16000) if rate != 16000 else mono, dtype=np.float32)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("wavs", nargs="+")
    args = parser.parse_args()
    asr = FunASRNano(args.model_dir, device=args.device)
    began = time.perf_counter()
    asr.load()
    print(f"loaded + warmed up in {time.perf_counter() - began:.1f} s")
    for path in args.wavs:
        audio = _read(path)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = await asr.transcribe(audio)
            times.append(time.perf_counter() - started)
        print(
            f"{path}: {audio.size / 16000:5.1f} s audio, latency p50 {statistics.median(times) * 1000:6.0f} ms, "
            f"min {min(times) * 1000:6.0f} ms; {result.text[:60]!r}"
        )
    asr.close()


if __name__ == "__main__":
    asyncio.run(main())
