"""Issue 11.6, the record factory itself: a key is redacted from tracebacks and stack dumps too, not only
from messages, whichever handler formats the record."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from speaches.config import Settings
from speaches.web.log_redaction import REDACTED, install_secret_redaction

API_KEY = "sk-live-secret-0123456789"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    original = logging.getLogRecordFactory()
    install_secret_redaction(Settings(api_key=API_KEY))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(original)


def test_a_key_in_an_exception_is_redacted_from_the_traceback(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError(f"could not reach http://upstream/v1/models?api_key={API_KEY}, header Bearer {API_KEY}")
    except ValueError:
        logger.exception("the upstream call failed")
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "ValueError: could not reach" in text
    assert API_KEY not in text
    assert f"api_key={REDACTED}" in text


def test_a_key_in_a_stack_dump_or_a_message_is_redacted(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    # The stack dump quotes this source line, and with it the key written out in it.
    logger.warning("handshake with %s", "/v1/realtime?api_key=sk-live-secret-0123456789", stack_info=True)
    text = stream.getvalue()
    assert "Stack (most recent call last)" in text
    assert "handshake with /v1/realtime?api_key=[redacted]" in text
    assert API_KEY not in text
