"""Session defaults and validation follow what the engines say of themselves."""

from __future__ import annotations

import pytest

from cosyagent.agent.session_config import SessionConfig
from cosyagent.agent.session_fields import InvalidSessionValue
from cosyagent.engines.funasr_asr import FunASRNano
from cosyagent.engines.whisper_asr import WhisperASR


def config_for(languages: tuple[str, ...], model: str = "asr-1") -> SessionConfig:
    return SessionConfig(
        model="m", instructions="", voice="v", transcription_model=model, transcription_languages=languages
    )


def with_language(config: SessionConfig, language: object) -> SessionConfig:
    session = {"audio": {"input": {"transcription": {"language": language}}}}
    return config.updated(session, voice_exists=lambda _voice: True)


def test_an_asr_that_transcribes_chinese_accepts_it() -> None:
    config = with_language(config_for(("zh", "en", "ja")), "zh")
    assert config.transcription_language == "zh"
    assert config.to_dict("s")["audio"]["input"]["transcription"] == {"model": "asr-1", "language": "zh"}


def test_an_english_only_asr_refuses_chinese_as_before() -> None:
    with pytest.raises(InvalidSessionValue) as caught:
        with_language(config_for(("en",)), "zh")
    assert caught.value.param == "session.audio.input.transcription.language"
    assert str(caught.value) == "language 'zh' is not supported by this ASR engine (English only)"


@pytest.mark.parametrize("language", [None, "en"])
def test_no_language_or_a_supported_one_is_accepted(language: str | None) -> None:
    assert with_language(config_for(("en",)), language).transcription_language == language


def test_the_refusal_names_every_language_of_the_engine() -> None:
    with pytest.raises(InvalidSessionValue, match=r"\(Chinese, English and Japanese only\)"):
        with_language(config_for(("zh", "en", "ja")), "fr")


def test_the_engines_describe_what_sessions_read() -> None:
    assert (WhisperASR.info.model, WhisperASR.info.languages) == ("whisper-tiny.en", ("en",))
    assert FunASRNano.info.languages == ("zh", "en", "ja")
    assert SessionConfig(model="m", instructions="", voice="v").transcription_model == WhisperASR.info.model


def test_transcription_null_turns_the_reports_off_and_an_object_back_on() -> None:
    def update(config: SessionConfig, transcription: object) -> SessionConfig:
        return config.updated({"audio": {"input": {"transcription": transcription}}}, voice_exists=lambda _v: True)

    off = update(config_for(("en",)), None)
    assert not off.transcription_reported
    assert off.to_dict("s")["audio"]["input"]["transcription"] is None
    again = update(off, {"model": "asr-1"})
    assert again.transcription_reported
    assert again.to_dict("s")["audio"]["input"]["transcription"] == {"model": "asr-1", "language": None}
    untouched = config_for(("en",)).updated({"instructions": "Be brief."}, voice_exists=lambda _v: True)
    assert untouched.transcription_reported


def test_a_transcription_prompt_is_kept_reported_and_checked() -> None:
    def update(config: SessionConfig, transcription: object) -> SessionConfig:
        return config.updated({"audio": {"input": {"transcription": transcription}}}, voice_exists=lambda _v: True)

    named = update(config_for(("en",)), {"language": "en", "prompt": "Piketty, Dublin"})
    assert named.transcription_prompt == "Piketty, Dublin"
    assert named.to_dict("s")["audio"]["input"]["transcription"]["prompt"] == "Piketty, Dublin"
    assert update(named, {"language": "en"}).transcription_prompt is None  # the object is taken whole
    with pytest.raises(InvalidSessionValue) as refused:
        update(named, {"prompt": ["Piketty"]})
    assert refused.value.param == "session.audio.input.transcription.prompt"
