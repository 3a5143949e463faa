"""Which llama-server slot serves a conversation's next reply (cosyagent.runtime.llm_slots)."""

from __future__ import annotations

import pytest

from cosyagent.runtime.llm_slots import LLMSlots


def test_a_conversation_comes_back_to_the_slot_that_holds_its_history() -> None:
    slots = LLMSlots(4)
    a, b, c = slots.conversation(), slots.conversation(), slots.conversation()
    first: dict[int, int] = {}
    for conversation in (a, b, c):  # one after another, as turns end
        slot = slots.take(conversation)
        assert slot is not None
        first[conversation] = slot
        slots.give_back(slot)
    assert len(set(first.values())) == 3  # a free slot nobody used before, not the one just freed
    for conversation in (c, a, b):
        again = slots.take(conversation)
        assert again == first[conversation]
        slots.give_back(again)


def test_a_busy_slot_is_never_named_and_the_least_recently_used_goes_first() -> None:
    slots = LLMSlots(2)
    a, b, c = slots.conversation(), slots.conversation(), slots.conversation()
    slot_a = slots.take(a)
    slot_b = slots.take(b)
    assert {slot_a, slot_b} == {0, 1}
    assert slots.take(c) is None  # all busy: llama-server queues it for the first free slot
    assert slot_b is not None and slot_a is not None
    slots.give_back(slot_b)
    slots.give_back(slot_a)
    assert slots.take(c) == slot_a  # both free and owned: a's was used longer ago
    assert slots.take(a) == slot_b  # its own is busy (c took it over): the other free one


def test_a_second_reply_of_the_same_conversation_while_one_runs_gets_another_slot() -> None:
    slots = LLMSlots(2)
    a = slots.conversation()
    running = slots.take(a)
    assert running is not None
    other = slots.take(a)
    assert other is not None and other != running


def test_no_slots_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="count"):
        LLMSlots(0)


def test_decoding_while_any_slot_serves_a_request() -> None:
    slots = LLMSlots(2)
    conversation = slots.conversation()
    assert not slots.decoding
    with slots.held(conversation):
        assert slots.decoding
    assert not slots.decoding
