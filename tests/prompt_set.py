"""The everyday prompt set (tests/data/everyday_questions.yaml) and its generous answer checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

QUESTIONS_FILE = Path(__file__).resolve().parent / "data" / "everyday_questions.yaml"


@dataclass(frozen=True)
class Question:
    ask: str
    expect: tuple[tuple[re.Pattern[str], ...], ...]
    """Groups of patterns: a reply must match at least one pattern of every group."""
    reject: tuple[re.Pattern[str], ...] = ()
    """A reply matching any of these is wrong (it also states a wrong answer)."""

    def accepts(self, reply: str) -> bool:
        if any(pattern.search(reply) for pattern in self.reject):
            return False
        return all(any(pattern.search(reply) for pattern in group) for group in self.expect)


def load_questions(path: Path = QUESTIONS_FILE) -> list[Question]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        Question(
            item["ask"],
            tuple(tuple(re.compile(str(p), re.IGNORECASE) for p in group) for group in item["expect"]),
            tuple(re.compile(str(p), re.IGNORECASE) for p in item.get("reject", ())),
        )
        for item in raw
    ]
