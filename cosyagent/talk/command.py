"""``cosyagent talk``: speak an audio file to a running server as a microphone would, show what
was heard and answered as it arrives, play the reply where the machine can, and save it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import numpy as np
import soundfile as sf

from cosyagent.talk.clip import RATE, TRAILING_SILENCE_S, Clip, TalkError, load_clip, silence
from cosyagent.talk.connection import EventStream, Microphone, checked_base_url, connect
from cosyagent.talk.console import LiveTranscript, print_summary
from cosyagent.talk.playback import Player, find_player
from cosyagent.talk.turn import TurnCollector, TurnResult

# After the clip and its trailing silence have been sent, how long the server's VAD has left
# to report speech before the clip counts as silent.
NO_SPEECH_GRACE_S = 1.5


async def _converse(
    events: EventStream, clip: Clip, clip_at: float, args: argparse.Namespace, live: LiveTranscript
) -> TurnResult:
    """Show the turn's events as they come until its reply completes. Gives up when the server
    has heard no speech by the end of the clip (plus a grace period), or has gone quiet for ``--timeout``."""
    collector = TurnCollector(clip_at + clip.speech_end_s)
    no_speech_by = clip_at + clip.duration_s + TRAILING_SILENCE_S + NO_SPEECH_GRACE_S
    heard_speech = False
    while True:
        deadline = time.monotonic() + args.timeout
        try:
            item = await events.next(deadline if heard_speech else min(deadline, no_speech_by))
        except TimeoutError as exc:
            if not heard_speech and time.monotonic() >= no_speech_by:
                raise TalkError(f"no speech was detected in {args.wav}", exit_code=2) from exc
            raise TalkError(f"no complete reply: the server sent nothing for {args.timeout:g} s") from exc
        heard_speech = heard_speech or item.type == "input_audio_buffer.speech_started"
        live.show(item)
        if collector.feed(item):
            return collector.result


async def _session(clip: Clip, url: str, args: argparse.Namespace, player: Player | None) -> TurnResult:
    async with connect(url, args.api_key, timeout_s=min(10.0, args.timeout)) as conn:
        events = EventStream(conn)
        events.start()
        try:
            setup_deadline = time.monotonic() + min(10.0, args.timeout)
            await events.expect("session.created", setup_deadline)
            if args.voice:
                await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": args.voice}}})
                await events.expect("session.updated", setup_deadline)
            print(f"speaking {args.wav} ({clip.duration_s:.1f} s) to {url} in real time...", flush=True)
            live = LiveTranscript(sys.stdout, player)
            mic = Microphone(conn, keep_alive=False)
            mic.start()
            try:
                clip_at = mic.play(clip.pcm16() + silence(TRAILING_SILENCE_S))
                return await _converse(events, clip, clip_at, args, live)
            finally:
                live.end()
                await mic.aclose()
        finally:
            await events.aclose()


async def _talk(clip: Clip, url: str, args: argparse.Namespace) -> tuple[TurnResult, str]:
    """The turn's result and what became of the playback (for the summary)."""
    choice = find_player()
    if args.no_play or choice.command is None:
        reason = "--no-play" if args.no_play else choice.reason
        return await _session(clip, url, args, None), f"not played ({reason})"
    player = Player(choice)
    await player.start()
    try:
        result = await _session(clip, url, args, player)
        await player.finish()
    finally:
        await player.close()
    return result, f"not played ({player.failure})" if player.failure else f"played with {choice.name}"


def _save(result: TurnResult, path: str) -> None:
    try:
        sf.write(path, np.frombuffer(bytes(result.reply_pcm16), dtype="<i2"), RATE, subtype="PCM_16")
    except (OSError, RuntimeError) as exc:
        raise TalkError(f"cannot write the reply to {path}: {exc}", exit_code=2) from exc


def run_talk(args: argparse.Namespace) -> int:
    """Entry point of ``cosyagent talk``; returns the exit status (2: something to fix before
    trying again, such as the file, the URL or a server not started; 1: the turn failed)."""
    try:
        if args.timeout <= 0:
            raise TalkError("--timeout must be positive", exit_code=2)
        url, note = checked_base_url(args.url)
        if note:
            print(f"cosyagent talk: {note}", file=sys.stderr)
        clip = load_clip(args.wav)
        result, playback = asyncio.run(_talk(clip, url, args))
        _save(result, args.out)
    except TalkError as exc:
        print(f"cosyagent talk: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    print_summary(result, os.path.abspath(args.out), playback, sys.stdout)
    return 0
