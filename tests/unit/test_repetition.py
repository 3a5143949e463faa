"""A reply that says the same clause a third time ends there (pipeline.repetition)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from cosyagent.pipeline.repetition import until_it_repeats


class LLMText:
    """An LLM's text stream: ``pieces`` one by one, recording how far it was read and whether it was closed."""

    def __init__(self, *pieces: str) -> None:
        self.pieces = pieces
        self.read = 0
        self.closed = False

    async def stream(self) -> AsyncIterator[str]:
        try:
            for piece in self.pieces:
                self.read += 1
                yield piece
        finally:
            self.closed = True


async def passed_on(llm: LLMText) -> str:
    return "".join([delta async for delta in until_it_repeats(llm.stream())])


async def test_a_looping_reply_ends_with_the_third_saying_and_the_llm_stream_is_closed() -> None:
    # The loop one full test run heard from the embedded model, in the pieces a server streams.
    loop = ["Bee", " produce", " honey", ",", " bees", " make", " honey", ",", " bees", " make", " honey", ","]
    llm = LLMText(*loop, *[" bees", " make", " honey", ","] * 20)
    said = await passed_on(llm)
    assert said == "Bee produce honey, bees make honey, bees make honey, bees make honey,"
    assert llm.closed and llm.read == len(loop) + 4  # read no further than the third saying


async def test_words_after_the_third_saying_in_the_same_piece_are_not_passed_on() -> None:
    llm = LLMText("Honey bees, honey bees, honey bees, and more honey bees.")
    assert await passed_on(llm) == "Honey bees, honey bees, honey bees,"
    assert llm.closed


async def test_a_clause_split_across_pieces_is_recognized() -> None:
    llm = LLMText("I am", " sorry. I", " am so", "rry. I am sor", "ry! Let me", " help.")
    assert await passed_on(llm) == "I am sorry. I am sorry. I am sorry!"


async def test_ordinary_replies_pass_whole() -> None:
    replies = [
        "Bees produce honey, which is a sweet, sweet, sweet honey.",  # a stutter of one word, 22 of 300 answers
        "Two ways:\n1. Take the bus.\n2. Walk.\n3. Cycle.",
        "Thank you. It is 3.5 km away, thank you, and have a nice day.",  # said twice is not a loop
        "Yes, yes, yes, yes.",
    ]
    for reply in replies:
        words = re.findall(r"\S+\s*", reply)
        llm = LLMText(*words)
        assert await passed_on(llm) == reply
        assert llm.read == len(words)


async def test_each_piece_is_passed_on_before_the_next_is_read() -> None:
    """No hold: the speech path gets the words at once (a reply about to run dry speaks what it has)."""
    llm = LLMText("Paris is", " the capital", " of France")
    deltas = until_it_repeats(llm.stream())
    assert await anext(deltas) == "Paris is" and llm.read == 1
    assert await anext(deltas) == " the capital" and llm.read == 2


async def test_a_chinese_loop_ends_too() -> None:
    llm = LLMText("蜜蜂会酿蜜，", "蜜蜂会酿蜜，", "蜜蜂会酿蜜，", "蜜蜂会酿蜜。")
    assert await passed_on(llm) == "蜜蜂会酿蜜，" * 3
    assert llm.read == 3
