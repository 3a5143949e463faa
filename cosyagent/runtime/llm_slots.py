"""Which slot of the embedded llama.cpp server serves each conversation's next reply.

llama-server keeps one prompt cache per slot. A conversation's next request reuses that cache
only if it lands on the slot that served its last reply: then just the new user turn is read
(~20 tokens), where another slot, holding another conversation, must read the whole history
again (50-70 tokens after one exchange: ~0.2 s more of both cores, more while others are
served). Left to itself, llama-server hands a request the free slot whose cache is most
similar, and conversations that share the instructions look alike: every first turn of four
sessions went to slot 0, overwriting the conversation before, and later turns now and then
read their whole history again (docs/benchmarks.md, "Each conversation keeps its LLM slot").
So requests name their slot (``id_slot``), chosen here:

1. the slot that served this conversation last, if no reply runs on it now;
2. else a free slot that has served no conversation yet;
3. else the free slot least recently used, whose conversation is likeliest over.

With every slot busy a request names none and llama-server queues it for the first free one:
a named busy slot would make it wait for that one alone.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class _Slot:
    owner: int | None = None  # the conversation whose history its cache holds
    busy: bool = False
    last_used: int = 0


class LLMSlots:
    """The slots of one llama-server (``llm.parallel``), shared by every session of the process."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self._slots = [_Slot() for _ in range(count)]
        self._conversations = itertools.count()
        self._uses = itertools.count(1)
        self._lock = threading.Lock()  # sessions of several event loops share the server (tests do)

    def conversation(self) -> int:
        """A new conversation's key, for :meth:`take`."""
        return next(self._conversations)

    def take(self, conversation: int) -> int | None:
        """The slot for this conversation's next request, now busy until :meth:`give_back`;
        None when every slot is busy."""
        with self._lock:
            free = [index for index, slot in enumerate(self._slots) if not slot.busy]
            if not free:
                return None
            own = [index for index in free if self._slots[index].owner == conversation]
            unused = [index for index in free if self._slots[index].owner is None]
            chosen = (own or unused or sorted(free, key=lambda index: self._slots[index].last_used))[0]
            slot = self._slots[chosen]
            slot.owner, slot.busy, slot.last_used = conversation, True, next(self._uses)
            return chosen

    def give_back(self, index: int) -> None:
        """The request on slot ``index`` has ended (finished, failed or cancelled)."""
        with self._lock:
            self._slots[index].busy = False

    @property
    def decoding(self) -> bool:
        """Whether any slot serves a request now (llama.cpp is using the cores)."""
        with self._lock:
            return any(slot.busy for slot in self._slots)

    @contextmanager
    def held(self, conversation: int) -> Iterator[int | None]:
        """:meth:`take` for one request, given back when the block ends, however it ends."""
        slot = self.take(conversation)
        try:
            yield slot
        finally:
            if slot is not None:
                self.give_back(slot)
