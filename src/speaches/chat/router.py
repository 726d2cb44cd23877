"""POST /v1/chat/completions: a conversation that may speak and be spoken to, thought through by the LLM."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from speaches.chat.completions import StreamedAnswer, llm_body, spoken_answer, spoken_completion
from speaches.chat.messages import in_words
from speaches.chat.protocol import ChatCompletionRequest
from speaches.web.dependencies import AfterResponse, State
from speaches.web.errors import error_responses
from speaches.web.streaming import event_stream

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    responses={
        200: {
            "description": (
                "The LLM's chat completion (with `message.audio` when audio was asked for), or its chunks as "
                "server-sent events when `stream=true`."
            ),
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        **error_responses(400, 404, 429, 502, 503, 504),
    },
)
async def create_chat_completion(request: ChatCompletionRequest, state: State, cleanups: AfterResponse) -> Response:
    """OpenAI's `chat.completions.create`, answered by CHAT_COMPLETION_BASE_URL's LLM: `input_audio` is
    transcribed for it, and with `modalities: ["text", "audio"]` its answer is spoken."""
    backend = state.chat
    backend.llm.check_configured()
    spoken = spoken_answer(state, request)
    if spoken is not None:
        # Held for the whole answer: an unknown voice fails before the LLM is asked, and stays loaded between sentences.
        lease = await state.models.acquire(spoken.voice)
        cleanups.callback(lease.release)
    messages = [message.model_dump(exclude_unset=True) for message in request.messages]
    body = llm_body(request, await in_words(state, backend, messages))
    if request.stream:
        answer = StreamedAnswer(state, backend, body, spoken)
        cleanups.push_async_callback(answer.aclose)
        await answer.start()
        return event_stream(answer.events(), state.settings)
    if spoken is None:
        return JSONResponse(await backend.llm.complete(body))
    return JSONResponse(await spoken_completion(state, backend, body, spoken))
