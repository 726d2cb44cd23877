"""The OpenAI Realtime API: `WS /v1/realtime` (conversations), `?intent=transcription`, `/v1/realtime/translations`.

Spoken as the official SDKs speak it: `client.realtime.connect(extra_query={"intent": "transcription"})` and
`client.realtime.translations.connect(model=...)`. The events are in `speaches.realtime.protocol`; the work in
`transcription.py` and `translation.py`. With API_KEY set, `ApiKeyMiddleware` has already refused a handshake
without the key (the `Authorization` header, `?api_key=`, or the `openai-insecure-api-key.<key>` subprotocol).
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from speaches.auth import KEY_SUBPROTOCOL_PREFIX
from speaches.errors import ApiError
from speaches.realtime.connection import RealtimeConnection, RealtimeSession
from speaches.realtime.conversation import ConversationSession
from speaches.realtime.transcription import TranscriptionSession
from speaches.realtime.translation import TranslationSession
from speaches.web.dependencies import State

router = APIRouter()


@router.websocket("/v1/realtime")
async def realtime_session(websocket: WebSocket, state: State) -> None:
    """A Realtime session: with `?intent=transcription` a transcription session (audio in, transcript deltas of
    each turn out while it is spoken); without an intent a conversation session with the LLM named by `model`."""
    await websocket.accept(subprotocol=chosen_subprotocol(websocket))
    intent = websocket.query_params.get("intent")
    model = websocket.query_params.get("model")
    session: RealtimeSession
    if intent == "transcription":
        session = TranscriptionSession(state.settings, state.catalog, state.models, state.pool, model=model)
    else:
        session = ConversationSession(state, model=model)
    connection = RealtimeConnection(websocket, state.settings, session, audio_kind="live")
    if intent not in (None, "transcription"):
        await connection.refuse(
            ApiError(
                "This server runs Realtime conversation sessions (no intent), transcription sessions "
                "(?intent=transcription) and translation sessions (/v1/realtime/translations).",
                param="intent",
                code="unsupported_intent",
            )
        )
        return
    await connection.serve()


@router.websocket("/v1/realtime/translations")
async def realtime_translation(websocket: WebSocket, state: State) -> None:
    """A Realtime translation session: speech in any language in, English text and speech out."""
    await websocket.accept(subprotocol=chosen_subprotocol(websocket))
    session = TranslationSession(
        state.settings, state.catalog, state.models, state.pool, model=websocket.query_params.get("model")
    )
    await RealtimeConnection(websocket, state.settings, session, audio_kind="translation").serve()


def chosen_subprotocol(websocket: WebSocket) -> str | None:
    """The subprotocol to answer with: a browser that offers some fails the handshake unless one is chosen.
    `realtime` when offered (OpenAI's browser clients offer it beside the key), else the first offered."""
    offered = [protocol for protocol in websocket.scope.get("subprotocols", ()) if protocol]
    if "realtime" in offered:
        return "realtime"
    plain = [protocol for protocol in offered if not protocol.startswith(KEY_SUBPROTOCOL_PREFIX)]
    return (plain or offered or [None])[0]
