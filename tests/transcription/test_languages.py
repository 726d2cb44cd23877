"""The language field: whisper's codes and their English names, accepted either way, refused with a hint."""

from __future__ import annotations

import pytest
from faster_whisper.tokenizer import _LANGUAGE_CODES

from speaches.errors import InvalidRequestError
from speaches.languages import LANGUAGE_NAMES, language_code, language_name


def test_every_whisper_language_has_an_english_name() -> None:
    assert set(LANGUAGE_NAMES) == set(_LANGUAGE_CODES)
    assert len(set(LANGUAGE_NAMES.values())) == len(LANGUAGE_NAMES)
    assert language_name("en") == "english"
    assert language_name("fr") == "french"


@pytest.mark.parametrize(("given", "code"), [("de", "de"), ("DE", "de"), ("German", "de"), (" fr ", "fr"), ("", None)])
def test_language_accepts_codes_and_names(given: str, code: str | None) -> None:
    assert language_code(given) == code


def test_unknown_language_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        language_code("klingon")
    assert refused.value.param == "language"
    assert "'en'" in refused.value.message
