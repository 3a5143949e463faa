"""A reply's LLM request sent ahead (pipeline.llm_prefetch), with the real OpenAI-compatible client
against fake_chat_llm over a real socket on 127.0.0.1: the reply that asks the same gets the
answer already under way (one request in all), any other request drops it first (the server
sees the stream closed), and a drop stops it."""

from __future__ import annotations

import asyncio

import pytest

from cosyagent.engines.base import EngineError
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.pipeline.llm_prefetch import ChatRequest, PrefetchingLLM, llm_request
from tests.engines.test_engine_llm_tools import fake
from tests.fakes.fake_chat_llm import FakeChatLLM, Reply

__all__ = ["fake"]  # fake_chat_llm on 127.0.0.1 and the real client to it (test_engine_llm_tools)

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Dublin?"}]
OTHER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Dublin? In Ireland?"}]


async def until(condition: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_the_reply_that_asks_the_same_gets_the_answer_already_under_way(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    chat, llm = fake
    chat.replies.append(Reply(text="It is in Ireland.", delay_s=0.05))
    prefetching = PrefetchingLLM(llm)
    prefetching.prefetch("job-1", ChatRequest(QUESTION, max_tokens=80))
    await until(lambda: chat.requests)  # sent before anyone asked
    await asyncio.sleep(0.3)  # the silence wait runs out meanwhile
    answer = "".join([d async for d in prefetching.stream_chat(list(QUESTION), max_tokens=80)])
    assert answer == "It is in Ireland."
    assert len(chat.requests) == 1 and chat.disconnected == 0
    assert chat.requests[0]["messages"] == QUESTION and chat.requests[0]["max_tokens"] == 80
    await prefetching.aclose()


async def test_any_other_request_drops_the_one_sent_ahead_and_asks_its_own(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    chat, llm = fake
    chat.replies += [Reply(text="It is in Ireland, on the east coast of the island.", delay_s=0.2), Reply(text="Yes.")]
    prefetching = PrefetchingLLM(llm)
    prefetching.prefetch("job-1", ChatRequest(QUESTION, max_tokens=80))
    await until(lambda: chat.requests)
    answer = "".join([d async for d in prefetching.stream_chat(OTHER, max_tokens=80)])  # other messages
    assert answer == "Yes." and [r["messages"] for r in chat.requests] == [QUESTION, OTHER]
    await until(lambda: chat.disconnected == 1)  # the server saw the stream sent ahead closed
    chat.replies += [Reply(text="Unused.", delay_s=0.2), Reply(text="Asked again.")]
    prefetching.prefetch("job-2", ChatRequest(QUESTION, max_tokens=80))
    await until(lambda: len(chat.requests) == 3)
    answer = "".join([d async for d in prefetching.stream_chat(QUESTION, max_tokens=40)])  # another max_tokens
    assert answer == "Asked again." and chat.requests[-1]["max_tokens"] == 40
    await until(lambda: chat.disconnected == 2)
    await prefetching.aclose()


async def test_dropping_its_key_stops_the_request_and_another_key_does_not(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    chat, llm = fake
    chat.replies.append(Reply(text="one two three four five six seven eight", delay_s=0.2))
    prefetching = PrefetchingLLM(llm)
    prefetching.prefetch("job-1", ChatRequest(QUESTION))
    await until(lambda: chat.requests)
    prefetching.drop("job-0")  # a transcript long gone: not this request's
    await asyncio.sleep(0.1)
    assert chat.disconnected == 0
    prefetching.drop("job-1")  # the speaker went on
    await until(lambda: chat.disconnected == 1)
    chat.replies.append(Reply(text="Fresh."))
    assert "".join([d async for d in prefetching.stream_chat(QUESTION)]) == "Fresh."  # asked anew
    assert len(chat.requests) == 2
    await prefetching.aclose()


async def test_an_error_of_the_request_sent_ahead_reaches_the_reply_that_takes_it(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    chat, llm = fake  # no scripted reply: the endpoint answers 400
    prefetching = PrefetchingLLM(llm)
    prefetching.prefetch("job-1", ChatRequest(QUESTION))
    await until(lambda: chat.requests)
    with pytest.raises(EngineError, match="refused the request"):
        [d async for d in prefetching.stream_chat(QUESTION)]
    await prefetching.aclose()


async def test_closing_drops_the_request_under_way_and_leaves_no_task(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    chat, llm = fake
    chat.replies.append(Reply(text="one two three four five six", delay_s=0.2))
    prefetching = PrefetchingLLM(llm)
    prefetching.prefetch("job-1", ChatRequest(QUESTION))
    await until(lambda: chat.requests)
    await prefetching.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("llm-prefetch-")]
    await until(lambda: chat.disconnected == 1)


async def test_a_read_ahead_asks_one_token_is_never_taken_and_never_replaces_a_reply_sent_ahead(
    fake: tuple[FakeChatLLM, OpenAICompatibleLLM],
) -> None:
    chat, llm = fake
    chat.replies += [Reply(text="one two three", delay_s=0.3), Reply(text="Read."), Reply(text="It is in Ireland.")]
    prefetching = PrefetchingLLM(llm)
    prefetching.read_ahead("draft-1", ChatRequest(OTHER[:1] + [{"role": "user", "content": "Where"}]))
    await until(lambda: chat.requests)
    assert chat.requests[0]["max_tokens"] == 1  # the prompt is what it is for
    prefetching.read_ahead("draft-1", ChatRequest(QUESTION[:1] + [{"role": "user", "content": "Where is"}]))
    await until(lambda: chat.disconnected == 1 and len(chat.requests) == 2)  # the later draft replaced it
    await asyncio.sleep(0.1)  # the second read is answered ("Read.") and kept by no one
    answer = "".join([d async for d in prefetching.stream_chat(QUESTION, max_tokens=80)])
    assert answer == "It is in Ireland." and len(chat.requests) == 3  # the reply asked for itself
    assert chat.requests[-1]["messages"] == QUESTION and chat.requests[-1]["max_tokens"] == 80

    chat.replies += [Reply(text="It is in Ireland.", delay_s=0.2)]
    prefetching.prefetch("job-1", ChatRequest(QUESTION, max_tokens=80))
    await until(lambda: len(chat.requests) == 4)
    prefetching.read_ahead("draft-2", ChatRequest(OTHER))  # a reply's request is under way: no read
    await asyncio.sleep(0.1)
    assert len(chat.requests) == 4 and chat.disconnected == 1
    answer = "".join([d async for d in prefetching.stream_chat(QUESTION, max_tokens=80)])
    assert answer == "It is in Ireland." and len(chat.requests) == 4
    await prefetching.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("llm-prefetch-")]


def test_a_spoken_reply_asks_in_the_voice_language_tools_or_not() -> None:
    english = llm_request(QUESTION, ("en",), audio=True, max_tokens=80)
    assert english.messages[0]["content"].startswith("Be brief.\n") and english.messages[1:] == QUESTION[1:]
    assert llm_request(QUESTION, ("en",), audio=False).messages == QUESTION  # text replies: as asked
    # Without tools, tool_choice is not sent, so it makes no difference.
    assert ChatRequest(QUESTION, tool_choice="none").same_as(ChatRequest(QUESTION))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert not ChatRequest(QUESTION, tools, "none").same_as(ChatRequest(QUESTION, tools, "auto"))
