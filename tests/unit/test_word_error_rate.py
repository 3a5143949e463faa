"""The tests' WER (tests/support.py): digits and spelled numbers count the same, a wrong number
still counts as an error, and words are otherwise compared as before."""

from __future__ import annotations

import pytest

from tests.support import spell_numbers, word_error_rate, words_heard


@pytest.mark.parametrize(
    ("reference", "hypothesis"),
    [
        ("Two hours is equal to 120 minutes.", "Two hours is equal to one hundred twenty minutes."),
        ("Seven times eight is 56.", "Seven times eight is fifty-six."),
        ("A day is 24 hours long.", "A day is twenty four hours long."),
        ("Water freezes at 0°C.", "Water freezes at zero degrees C."),
        ("a 4% global wealth tax", "a four percent global wealth tax"),
        ("It weighs 1,500 grams.", "It weighs one thousand five hundred grams."),
        ("Pi is about 3.14.", "Pi is about three point one four."),
    ],
)
def test_digits_and_spelled_numbers_count_the_same(reference: str, hypothesis: str) -> None:
    assert word_error_rate(reference, hypothesis) == 0.0
    assert word_error_rate(reference, reference) == 0.0


def test_a_wrong_number_or_word_still_counts() -> None:
    assert word_error_rate("Seven times eight is 56.", "Seven times eight is fifty-seven.") == pytest.approx(1 / 6)
    assert word_error_rate("Bees make honey.", "These may Connie,") == 1.0
    # "and" outside a number is a word like any other.
    assert word_error_rate("7 days and 24 hours", "seven days 24 hours") == pytest.approx(1 / 6)
    assert words_heard("a 4% tax on wealth", "a four percent tax") == pytest.approx(4 / 6)


def test_spelling_leaves_words_alone() -> None:
    assert spell_numbers("well-known Dublin") == "well-known Dublin"
    assert spell_numbers("Fifty-six") == "Fifty six"
    # A recognizer's hyphenated spelling of a word is that word (Moonshine wrote "to-day").
    assert word_error_rate("The weather is lovely today.", "The weather is lovely to-day.") == 0.0
