"""Each conversation's replies come from the llama.cpp slot that holds its history, so a next
turn reads only the new words: two sessions that take turns do not overwrite each other's
prompt cache (cosyagent.runtime.llm_slots), and a reply cut off mid-stream frees its slot."""

from __future__ import annotations

from cosyagent.engines.base import ChatLLM, ChatMessage
from tests.e2e.conftest import LiveServer


async def _last_tasks(live_server: LiveServer) -> dict[int, int]:
    return {int(slot["id"]): int(slot.get("id_task", -1)) for slot in await live_server.llama_slots()}


async def _reply_slot(live_server: LiveServer, llm: ChatLLM, messages: list[ChatMessage]) -> tuple[int, str]:
    """Which slot served the whole reply to ``messages``, and the reply."""
    before = await _last_tasks(live_server)
    reply = "".join([delta async for delta in llm.stream_chat(messages, max_tokens=12)])
    after = await _last_tasks(live_server)
    served = [slot for slot, task in after.items() if task != before[slot]]
    assert len(served) == 1, (before, after)
    return served[0], reply


def _conversation(question: str) -> list[ChatMessage]:
    return [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": question}]


async def test_two_conversations_taking_turns_each_keep_their_slot(live_server: LiveServer) -> None:
    runtime = live_server.runtime
    assert runtime.llm_slots is not None  # the default embedded server decodes replies together
    anna, ben = runtime.session_engines().llm, runtime.session_engines().llm
    anna_talk, ben_talk = _conversation("What is the capital of France?"), _conversation("Why is the sky blue?")

    anna_slot, anna_reply = await _reply_slot(live_server, anna, anna_talk)
    ben_slot, ben_reply = await _reply_slot(live_server, ben, ben_talk)
    assert ben_slot != anna_slot  # llama-server alone gave ben the first free slot: anna's

    anna_talk += [{"role": "assistant", "content": anna_reply}, {"role": "user", "content": "And of Spain?"}]
    ben_talk += [{"role": "assistant", "content": ben_reply}, {"role": "user", "content": "And at sunset?"}]
    assert (await _reply_slot(live_server, ben, ben_talk))[0] == ben_slot
    assert (await _reply_slot(live_server, anna, anna_talk))[0] == anna_slot


async def test_a_reply_cut_off_mid_stream_gives_its_slot_back(live_server: LiveServer) -> None:
    llm = live_server.runtime.session_engines().llm
    talk = _conversation("Tell me a long story about a lighthouse keeper.")
    slot, _ = await _reply_slot(live_server, llm, talk)

    stream = llm.stream_chat(talk, max_tokens=200)
    async for _delta in stream:
        break  # the caller barged in
    await stream.aclose()  # type: ignore[attr-defined]

    assert (await _reply_slot(live_server, llm, talk))[0] == slot  # not held as busy by the cut-off reply
