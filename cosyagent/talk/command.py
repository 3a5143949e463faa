"""``cosyagent talk``: speak a WAV file to a server, save the reply, print what it took."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import numpy as np
import soundfile as sf

from cosyagent.talk.clip import RATE, TRAILING_SILENCE_S, Clip, TalkError, load_clip, silence
from cosyagent.talk.connection import EventStream, Microphone, connect
from cosyagent.talk.turn import TurnResult, collect_turn


async def _talk(clip: Clip, args: argparse.Namespace) -> TurnResult:
    async with connect(args.url, args.api_key, timeout_s=min(10.0, args.timeout)) as conn:
        events = EventStream(conn)
        events.start()
        try:
            setup_deadline = time.monotonic() + min(10.0, args.timeout)
            await events.expect("session.created", setup_deadline)
            if args.voice:
                await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": args.voice}}})
                await events.expect("session.updated", setup_deadline)
            mic = Microphone(conn, keep_alive=False)
            mic.start()
            try:
                clip_at = mic.play(clip.pcm16() + silence(TRAILING_SILENCE_S))
                try:
                    return await collect_turn(events, clip_at + clip.speech_end_s, args.timeout)
                except TimeoutError as exc:
                    raise TalkError(f"no complete reply: the server sent nothing for {args.timeout:g} s") from exc
            finally:
                await mic.aclose()
        finally:
            await events.aclose()


def _print_report(result: TurnResult, out: str) -> None:
    for transcript in result.user_transcripts:
        print(f"you said: {transcript.strip()}")
    print(f"agent: {result.reply_text.strip()}")
    if result.interrupted_responses:
        print(f"note: {len(result.interrupted_responses)} earlier response(s) were cancelled by speech in the clip")
    print(f"reply audio: {result.reply_audio_s:.2f} s -> {out}")
    v2v = result.voice_to_voice_ms
    v2v_text = f"{v2v:.0f} ms (end of speech -> first reply audio)" if v2v is not None else "n/a"
    print(f"voice-to-voice: {v2v_text}")
    stages = [("end-of-turn detection", result.end_of_turn_ms), ("transcription", result.asr_ms)]
    print("  client: " + ", ".join(f"{name} {value:.0f} ms" for name, value in stages if value is not None))
    timings = result.server_timings_ms
    if timings:
        print("  server: " + ", ".join(f"{name.replace('_', ' ')} {value:.0f} ms" for name, value in timings.items()))


def run_talk(args: argparse.Namespace) -> int:
    """Entry point of ``cosyagent talk``; returns the exit status."""
    if args.timeout <= 0:
        print("cosyagent talk: --timeout must be positive", file=sys.stderr)
        return 2
    try:
        clip = load_clip(args.wav)
    except TalkError as exc:
        print(f"cosyagent talk: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_talk(clip, args))
    except TalkError as exc:
        print(f"cosyagent talk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        sf.write(args.out, np.frombuffer(bytes(result.reply_pcm16), dtype="<i2"), RATE, subtype="PCM_16")
    except (OSError, RuntimeError) as exc:
        print(f"cosyagent talk: cannot write {args.out!r}: {exc}", file=sys.stderr)
        return 1
    _print_report(result, args.out)
    return 0
