"""No API key in any log line, whoever writes it.

uvicorn logs every WebSocket handshake with its query string (`"WebSocket /v1/audio/transcriptions?api_key=..."`),
and browsers can only pass the key there. A log record factory rewrites each record's message before any
handler sees it: the value of every `api_key` query parameter (however its name is percent-encoded) and
any occurrence of the configured key are replaced by `[redacted]`. Wrong keys are redacted too: they may
be a real key meant for another server. A record factory rather than a filter, for the reason
`speaches.request_id` gives: uvicorn, pytest and basicConfig each bring their own handlers.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from speaches.config import Settings

REDACTED = "[redacted]"
_SECRET_PARAMETERS = frozenset({"api_key", "api-key", "apikey", "key", "token", "access_token"})
# A query parameter: after `?`, `&` or `;`, a name, `=`, and a value up to the next separator or quote.
_QUERY_PARAMETER = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;\s\"'?#]+)=(?P<value>[^&;\s\"'#]*)")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the values of secret query parameters, and every string in `secrets`, replaced."""

    def scrub(match: re.Match[str]) -> str:
        if unquote_plus(match["name"]).strip().lower() not in _SECRET_PARAMETERS or not match["value"]:
            return match[0]
        return f"{match['lead']}{match['name']}={REDACTED}"

    if "=" in text:
        text = _QUERY_PARAMETER.sub(scrub, text)
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


_TRACEBACK_FORMATTER = logging.Formatter()


def install_secret_redaction(settings: Settings) -> None:
    """Redact API keys from every log record from now on. Idempotent; the latest settings' key wins."""
    secrets = (settings.api_key.get_secret_value(),) if settings.api_key is not None else ()
    factory = logging.getLogRecordFactory()
    while getattr(factory, "redacts_secrets", False):
        factory = factory.wrapped  # type: ignore[attr-defined]

    def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it as it would
            return record
        cleaned = redact(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        # A traceback can hold a key too (an exception's message quoting a URL or a header). Formatters
        # print `exc_text` when it is set, so it is formatted here once, redacted.
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_TRACEBACK_FORMATTER.formatException(record.exc_info), secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return record

    make_record.redacts_secrets = True  # type: ignore[attr-defined]
    make_record.wrapped = factory  # type: ignore[attr-defined]
    # The request-id factory below this one still counts as installed, so it is not stacked again.
    make_record.adds_request_id = getattr(factory, "adds_request_id", False)  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
