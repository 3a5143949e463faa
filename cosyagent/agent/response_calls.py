"""The function calls one response makes: ``function_call`` output items, streamed as the LLM
makes them (openai-python's ``ResponseFunctionCallArgumentsDeltaEvent`` / ``DoneEvent``).

Each call the LLM streams (chat ``tool_calls`` by ``index``) becomes an item with a call id
of ours: ``response.output_item.added`` and ``conversation.item.added`` on its first piece,
``response.function_call_arguments.delta`` for each piece of its arguments, and once the LLM
has finished (or the response ends) ``response.function_call_arguments.done``,
``response.output_item.done`` and ``conversation.item.done``. A call cut short by a
cancellation ends ``incomplete``, with the arguments it had, and the LLM never sees it again.
"""

from __future__ import annotations

from collections.abc import Callable

from cosyagent.agent.conversation import ConversationItem, ItemStatus
from cosyagent.agent.events import Event, new_id
from cosyagent.engines.base import ToolCallDelta


class ResponseCalls:
    """Calls of response ``response_id``; ``place`` puts a new item in the conversation and
    returns the id of the item before it; ``next_index`` allots its output_index."""

    def __init__(self, response_id: str, place: Callable[[ConversationItem], str | None]) -> None:
        self.response_id = response_id
        self._place = place
        self._calls: dict[int, tuple[ConversationItem, int]] = {}  # the LLM's index -> (item, output_index)
        self._open: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._calls)

    def delta(self, piece: ToolCallDelta, output_index: int) -> tuple[list[Event], ConversationItem | None]:
        """Events for one piece of a call, and the call's item if this piece opened it (it then
        takes ``output_index``)."""
        events: list[Event] = []
        opened: ConversationItem | None = None
        if piece.index not in self._calls:
            opened = ConversationItem.function_call(
                new_id("item"), new_id("call"), piece.name or "", status="in_progress"
            )
            self._calls[piece.index] = (opened, output_index)
            self._open.append(piece.index)
            previous = self._place(opened)
            body = opened.to_event_dict()
            events += [
                _event(
                    "response.output_item.added", response_id=self.response_id, output_index=output_index, item=body
                ),
                _event("conversation.item.added", previous_item_id=previous, item=body),
            ]
        elif piece.name and piece.index in self._open:
            item = self._calls[piece.index][0]
            item.name += piece.name  # (servers send the name whole in the first piece; some may not)
        item, index = self._calls[piece.index]
        if piece.arguments and piece.index in self._open:
            item.arguments += piece.arguments
            events.append(
                _event("response.function_call_arguments.delta", **self._ids(item, index), delta=piece.arguments)
            )
        return events, opened

    def finish(self, status: ItemStatus = "completed") -> list[Event]:
        """End every open call: the LLM is done with them (completed) or the response ended first."""
        events: list[Event] = []
        for llm_index in self._open:
            item, index = self._calls[llm_index]
            item.status = status
            body = item.to_event_dict()
            events += [
                _event(
                    "response.function_call_arguments.done",
                    **self._ids(item, index),
                    name=item.name,
                    arguments=item.arguments,
                ),
                _event("response.output_item.done", response_id=self.response_id, output_index=index, item=body),
                _event("conversation.item.done", item=body),
            ]
        self._open.clear()
        return events

    def _ids(self, item: ConversationItem, output_index: int) -> dict[str, object]:
        return {
            "response_id": self.response_id,
            "item_id": item.id,
            "output_index": output_index,
            "call_id": item.call_id,
        }


def _event(event_type: str, **fields: object) -> Event:
    return {"type": event_type, "event_id": new_id("event"), **fields}
