"""How LLM tokens are cut into clauses for the synthesizer: the first one short (it decides
the time to first audio), the rest whole sentences."""

from __future__ import annotations

from cosyagent.pipeline.clauses import ClauseSplitter


def split(tokens: list[str]) -> list[str]:
    splitter = ClauseSplitter()
    clauses = [clause for token in tokens for clause in splitter.push(token)]
    return clauses + splitter.flush()


def tokens(text: str) -> list[str]:
    """Word-ish tokens with their leading spaces, as an LLM streams them."""
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


def test_the_first_clause_is_cut_after_three_words_then_sentences_run_whole() -> None:
    reply = "The quickest way to Dublin is the train. It leaves every hour from the central station."
    assert split(tokens(reply)) == [
        "The quickest way",
        "to Dublin is the train.",
        "It leaves every hour from the central station.",
    ]


def test_a_comma_or_a_sentence_end_cuts_the_first_clause_sooner() -> None:
    assert split(tokens("Sure, I can help with that."))[0] == "Sure,"
    assert split(tokens("Yes. The train is faster."))[:2] == ["Yes.", "The train is faster."]


def test_a_word_is_only_complete_once_a_space_follows() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("The quick bro") == []  # "bro" may still grow into "brown"
    assert splitter.push("wn fox") == ["The quick brown"]


def test_markdown_is_not_read_out() -> None:
    assert split(tokens("**Dublin** is `lovely`.")) == ["Dublin is lovely."]


def test_a_hurried_clause_is_the_words_written_so_far() -> None:
    """The listener is about to run out of audio: a later clause goes with the words there are,
    up to the last comma among them if there is one, rather than wait for its sentence's end."""
    splitter = ClauseSplitter()
    assert splitter.push("To get to Dublin by") == ["To get to"]
    assert splitter.push(" taking a tr") == []
    assert splitter.hurry() == "Dublin by taking a"  # "tr" may still grow
    assert splitter.push("ain from Heuston, a bus or a") == []
    assert splitter.hurry() == "train from Heuston,"  # a comma makes the better cut
    assert splitter.push(" car. It") == ["a bus or a car."]
    assert splitter.flush() == ["It"]


def test_no_hurry_before_the_first_clause_or_with_one_word() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Well now") == []
    assert splitter.hurry() is None  # the first clause is cut by its own rule
    assert splitter.push(" then you") == ["Well now then"]
    assert splitter.hurry() is None  # "you" may still grow
    assert splitter.push(" could") == []
    assert splitter.hurry() is None  # "you" alone would sound like a stumble
    assert splitter.push(" go") == []
    assert splitter.hurry() == "you could"
