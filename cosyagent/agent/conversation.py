"""A conversation's items, and the text the LLM sees of them.

Assistant replies keep an audio-aligned transcript: each spoken clause with the span
of output audio it occupies. Truncating at an audio offset keeps only the words that
were actually sent (or played), so after a barge-in the model does not "remember"
saying what the user never heard.

Function calls and their outputs are items too; the LLM sees each completed call as an
assistant ``tool_calls`` message followed by its ``tool`` message (:mod:`cosyagent.agent.tool_history`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cosyagent.agent.tool_history import with_tool_messages

Role = Literal["user", "assistant", "system"]
# Sums of chunk durations drift by fractions of a millisecond; don't cut a word for that.
_TOLERANCE_MS = 1.0
# What the LLM hears when asked for a reply before anyone has said anything and without
# instructions of the reply's own (a client letting the agent speak first): the caller picking
# up. Shown nothing, the embedded model answered "I'm sorry, but I can't assist with that." 5
# times in 5, or recited its instructions; with this, a greeting
# (benchmarks/results/opening-line-2026-12-07/).
OPENING_LINE = "Hello."
# User audio is kept as the recognizer heard it (PCM16 mono at its rate) for the newest items
# only: conversation.item.retrieve gives it back, and an hour's call would otherwise hold ~115 MB.
HEARD_RATE = 16000
HEARD_ITEMS_KEPT = 20
ItemStatus = Literal["in_progress", "completed", "incomplete"]
ItemType = Literal["message", "function_call", "function_call_output"]


@dataclass
class SpokenClause:
    text: str
    start_ms: float
    end_ms: float


@dataclass
class AlignedTranscript:
    """Text spoken so far, clause by clause, with each clause's span of output audio."""

    clauses: list[SpokenClause] = field(default_factory=list)

    @property
    def text(self) -> str:
        return join_clauses(c.text for c in self.clauses)

    @property
    def audio_ms(self) -> float:
        return self.clauses[-1].end_ms if self.clauses else 0.0

    def add_audio(self, clause_text: str | None, duration_ms: float) -> None:
        """Extend the last clause by ``duration_ms`` of audio, or open a new clause."""
        start = self.audio_ms
        if clause_text is not None:
            self.clauses.append(SpokenClause(clause_text, start, start + duration_ms))
        elif self.clauses:
            self.clauses[-1].end_ms += duration_ms

    def truncate(self, audio_end_ms: float) -> None:
        """Keep the words heard up to ``audio_end_ms``; a clause cut mid-way keeps its
        words in proportion to the part of its audio that was played."""
        kept: list[SpokenClause] = []
        audio_end_ms += _TOLERANCE_MS
        for clause in self.clauses:
            if clause.start_ms >= audio_end_ms:
                break
            if clause.end_ms <= audio_end_ms:
                kept.append(clause)
                continue
            words = clause.text.split()
            span = max(clause.end_ms - clause.start_ms, 1e-6)
            n_words = int(len(words) * (audio_end_ms - clause.start_ms) / span)
            if n_words:
                kept.append(SpokenClause(" ".join(words[:n_words]), clause.start_ms, audio_end_ms))
            break
        self.clauses = kept


def join_clauses(parts: Iterator[str] | Sequence[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


@dataclass
class ConversationItem:
    """A message item. ``text`` is typed text; ``audio_transcript`` is set for audio content.
    A ``function_call`` item has ``call_id``, ``name`` and ``arguments`` (JSON text); a
    ``function_call_output`` item has ``call_id`` and ``output``."""

    id: str
    role: Role
    content_type: Literal["input_text", "input_audio", "output_text", "output_audio", "text"]
    status: ItemStatus = "completed"
    text: str = ""
    transcript: str | None = None
    spoken: AlignedTranscript | None = None
    # A reply spoken to its end: the LLM's own text of it (line breaks, markup), which its server
    # has cached; the LLM is shown this rather than the spoken transcript. Dropped on truncation.
    llm_text: str | None = None
    type: ItemType = "message"
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str = ""
    heard: bytes | None = None  # a user audio item's audio (HEARD_RATE PCM16), while it is kept

    @classmethod
    def function_call(cls, item_id: str, call_id: str, name: str, arguments: str = "", **kw: Any) -> ConversationItem:
        return cls(
            item_id, "assistant", "text", type="function_call", call_id=call_id, name=name, arguments=arguments, **kw
        )

    @classmethod
    def function_call_output(cls, item_id: str, call_id: str, output: str) -> ConversationItem:
        return cls(item_id, "user", "text", type="function_call_output", call_id=call_id, output=output)

    def visible_text(self) -> str:
        if self.type != "message":
            return ""
        if self.spoken is not None:
            return self.spoken.text
        return self.transcript if self.transcript is not None else self.text

    def llm_view(self) -> str:
        """The text the LLM is shown for this message."""
        return self.llm_text if self.llm_text is not None else self.visible_text()

    def truncate_spoken(self, audio_end_ms: float) -> None:
        """Keep the words heard up to ``audio_end_ms`` (an audio reply's)."""
        assert self.spoken is not None
        before = self.spoken.text
        self.spoken.truncate(audio_end_ms)
        if self.spoken.text != before:
            self.llm_text = None

    def to_event_dict(self) -> dict[str, object]:
        """The item as the Realtime API shows it (`realtime.item`)."""
        common: dict[str, object] = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "function_call":
            return {**common, "name": self.name, "call_id": self.call_id, "arguments": self.arguments}
        if self.type == "function_call_output":
            return {**common, "call_id": self.call_id, "output": self.output}
        part: dict[str, object] = {"type": self.content_type}
        if self.content_type in ("input_text", "output_text", "text"):
            part["text"] = self.text
        else:
            part["transcript"] = self.visible_text() if self.role == "assistant" else self.transcript
        return {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": [part],
        }


class Conversation:
    """Ordered items of one session. Single-threaded: only the session's event loop touches it."""

    def __init__(self, max_items: int = 200) -> None:
        self._items: list[ConversationItem] = []
        self._max_items = max_items

    def __iter__(self) -> Iterator[ConversationItem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str) -> ConversationItem | None:
        return next((item for item in self._items if item.id == item_id), None)

    def add(self, item: ConversationItem, previous_item_id: str | None = None) -> str | None:
        """Insert after ``previous_item_id`` (``"root"`` = first; None = at the end).

        Returns the id of the item now before it. Raises KeyError for an unknown id.
        """
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == "root":
            index = 0
        else:
            index = next((i + 1 for i, it in enumerate(self._items) if it.id == previous_item_id), -1)
            if index < 0:
                raise KeyError(previous_item_id)
        self._items.insert(index, item)
        if len(self._items) > self._max_items:
            del self._items[0]
            index -= 1
        if item.heard is not None:
            for older in [it for it in self._items if it.heard is not None][:-HEARD_ITEMS_KEPT]:
                older.heard = None
        return self._items[index - 1].id if index > 0 else None

    def previous_id(self, item_id: str) -> str | None:
        """The id of the item before ``item_id`` (None for the first, or an unknown id)."""
        index = next((i for i, it in enumerate(self._items) if it.id == item_id), 0)
        return self._items[index - 1].id if index > 0 else None

    def delete(self, item_id: str) -> bool:
        before = len(self._items)
        self._items = [it for it in self._items if it.id != item_id]
        return len(self._items) != before

    def chat_messages(
        self, instructions: str, max_items: int, then: ConversationItem | None = None
    ) -> list[dict[str, Any]]:
        """The LLM's view: the instructions, then at most ``max_items`` recent non-empty messages
        (with ``then`` added last: the view once that item is in).

        The window moves in jumps of half its size rather than one item per turn: the
        prompt's beginning then stays the same for several turns, so the LLM server can
        reuse its cached prefix instead of re-reading the whole history every turn.
        """
        messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
        items = [*self._items, then] if then is not None else self._items
        visible = [it for it in items if it.visible_text().strip() or _completed_call(it)]
        step = max(1, max_items // 2)
        overflow = len(visible) - max_items
        start = -(-overflow // step) * step if overflow > 0 else 0  # overflow rounded up to a step
        outputs = {it.call_id: it.output for it in self._items if it.type == "function_call_output"}
        messages.extend(with_tool_messages(visible[start:], outputs))
        return messages


def _completed_call(item: ConversationItem) -> bool:
    return item.type == "function_call" and item.status == "completed"
