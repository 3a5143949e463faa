"""A reply the LLM stops at ``max_output_tokens`` ends as OpenAI's does: ``response.done`` with status
``incomplete`` and ``status_details`` ``{"type": "incomplete", "reason": "max_output_tokens"}``, its
item ``incomplete``, and every word the LLM gave said (nothing cut, unlike a cancel). The real
default stack (the embedded llama.cpp server, Piper, Moonshine, Silero), the official openai SDK.
"""

from __future__ import annotations

from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect
from tests.e2e.test_realtime_tools import connect, say

STORY = "Tell me a long story about a dragon who learns to sing."


async def test_a_reply_cut_at_the_token_cap_ends_incomplete_with_everything_it_said(live_server: LiveServer) -> None:
    for modality in ("audio", "text"):
        async with connect(live_server) as conn:
            await conn.session.update(
                session={"type": "realtime", "output_modalities": [modality], "max_output_tokens": 6}
            )
            await say(conn, STORY)
            await conn.response.create()
            seen = await collect(conn, Transcript(), until="response.done", timeout=120)
        (done,) = seen.of_type("response.done")
        response = done.response
        assert response.status == "incomplete", response
        assert response.status_details is not None
        assert (response.status_details.type, response.status_details.reason) == ("incomplete", "max_output_tokens")
        assert response.max_output_tokens == 6
        (item,) = response.output
        assert item.status == "incomplete"
        assert seen.of_type("conversation.item.done")[-1].item.status == "incomplete"
        if modality == "audio":
            streamed = "".join(e.delta for e in seen.of_type("response.output_audio_transcript.delta"))
            said = seen.of_type("response.output_audio_transcript.done")[0].transcript
            assert item.content[0].transcript == said
            assert len(seen.audio()) > 24_000 * 2 * 0.3, modality  # its words spoken: at least 0.3 s
            assert seen.of_type("response.output_audio.done")
        else:
            streamed = "".join(e.delta for e in seen.of_type("response.output_text.delta"))
            said = seen.of_type("response.output_text.done")[0].text
            assert item.content[0].text == said
        assert said.strip() and said.strip() == streamed.strip(), modality  # all it was given, nothing cut
        assert 1 <= len(said.split()) <= 6, said  # six tokens make at most six words
