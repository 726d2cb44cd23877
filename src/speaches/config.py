"""Every setting of the server, in one pydantic-settings class.

Each field is read from the environment (or a `.env` file in the working directory). Nested
settings use a double underscore: `WHISPER__COMPUTE_TYPE=int8`. Names follow the earlier speaches
server wherever it had one, so existing compose files keep working. `docs/configuration.md` is
generated from this class (`python -m speaches.config_docs`) and a test keeps the two in step.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Device(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class WhisperConfig(BaseModel):
    """faster-whisper (CTranslate2) settings, shared by every speech-to-text model."""

    model: str = Field(
        default="Systran/faster-whisper-base",
        description="The default speech-to-text model: used for `whisper-1` and when a request names none.",
    )
    inference_device: Device = Field(
        default=Device.AUTO,
        description="`auto` uses CUDA when CTranslate2 sees a GPU, else the CPU.",
    )
    device_index: int = Field(default=0, ge=0, description="Which GPU to use on a multi-GPU machine.")
    compute_type: str = Field(
        default="default",
        description=(
            "CTranslate2 compute type (`int8`, `int8_float16`, `float16`, `float32`, ...). "
            "`default`/`auto` pick what fits the device: `int8` on CPU, `float16` on CUDA."
        ),
    )
    cpu_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "CPU threads each of the model's workers computes with. 0: the CPUs this process may use (its "
            "affinity and container CPU limit) divided among the workers, at least 1."
        ),
    )
    num_workers: int = Field(
        default=0,
        ge=0,
        description=(
            "CTranslate2 workers per loaded model (replicas sharing its weights): how many model calls run at "
            "once. 0: on a CPU one per usable CPU (divided by `CPU_THREADS` when that is set), at most 4; on a GPU "
            "1. Single-threaded workers side by side serve concurrent clients about twice as fast on a CPU as one "
            "worker with every thread (docs/benchmarks.md)."
        ),
    )
    content_windows: Literal["off", "live", "all"] = Field(
        default="off",
        description=(
            "Encode a window shorter than Whisper's 30 s as its audio and 1 s of the padding after it (in 5 s "
            "steps, at least 10 s), not as the whole padded 30 s: 3-8 times less encoder work on short audio. "
            "`live`: only a live session's steps while speech goes on (Realtime turns, the live WebSocket); a step "
            "at a pause or at the end of the stream, and every upload, still hear 30 s. `all`: uploads too. A "
            "hearing that comes out as a repetition loop is heard again at 30 s. Off by default: `live` halved live "
            "latency on a slow CPU but once lost words on the live WebSocket, and with `all` an upload repeated "
            "its last sentence (docs/usage/transcription.md). Off: every window is encoded at 30 s, as Whisper "
            "was trained and as faster-whisper does."
        ),
    )
    use_batched_mode: bool = Field(
        default=True,
        description=(
            "Decode windows longer than 30 s in batched mode: the speech is cut at pauses into chunks of up to "
            "`WHISPER__BATCH_CHUNK_SECONDS`, decoded `WHISPER__BATCH_SIZE` at a time, each with timestamps and "
            "going on from its last timestamp until all of it is transcribed. It applies to `json`, `text` and "
            "streamed answers at temperature 0; `srt`, `vtt`, `verbose_json` and sampled requests decode "
            "sequentially. See docs/usage/transcription.md for its accuracy and speed against sequential decoding."
        ),
    )
    batch_size: int = Field(default=8, ge=1, le=64, description="Chunks decoded side by side in batched mode.")
    batch_chunk_seconds: float = Field(
        default=30.0,
        ge=5.0,
        le=30.0,
        description="Longest chunk of speech batched mode decodes as one piece (Whisper hears 30 s at a time).",
    )
    condition_on_previous_text: bool = Field(
        default=False,
        description=(
            "Let sequential decoding give each 30 s window the text of the windows before it as a prompt "
            "(Whisper's default). Off by default: on speech that repeats itself the model takes a sentence heard "
            "again for one already written and skips it, or loops: on 90 s of dense repeated sentences the word error "
            "rate rose from 0.028 to 0.296 (tiny.en) and from 0.023 to 0.202 (base) with it (docs/benchmarks.md). "
            "Batched mode never does this."
        ),
    )
    temperature_fallback: bool = Field(
        default=False,
        description=(
            "Let sequential decoding retry a 30 s window at higher temperatures (0.2 steps up to 1.0, Whisper's "
            "own fallback) when its text looks repetitive or improbable. Off by default: the retries sample at "
            "random, so the same request can give different transcripts. On the benchmark audio (measured with the "
            "previous-text prompt on) they changed only tiny.en's transcripts of dense repeated sentences: one "
            "worse (WER 0.023 to 0.041), one better (0.296 to 0.209, far behind 0.028 with neither), each "
            "different from run to run, at up to 2.7 times the CPU time (docs/benchmarks.md)."
        ),
    )
    max_batch_size: int = Field(
        default=8,
        ge=1,
        le=64,
        description=(
            "Most windows one model call decodes together across requests and live sessions (cross-request "
            "batching: calls that wait for the same model at the same time become one CTranslate2 call). "
            "1 turns it off. Jobs reach the model through the inference pool, so at most "
            "`INFERENCE_CONCURRENCY` of them can share a batch: raise both together to serve more clients "
            "at once. See docs/usage/transcription.md."
        ),
    )
    batch_wait_ms: float = Field(
        default=20.0,
        ge=0,
        le=1000,
        description=(
            "Longest a model call waits for companions before its batch starts, and only while another job "
            "that used the model a moment ago may join: a lone request never waits. Calls that arrive while "
            "the model is busy join the next batch without this wait."
        ),
    )
    window_seconds: float = Field(
        default=300.0,
        ge=30.0,
        description=(
            "Audio is decoded and transcribed in windows of at most this many seconds, cut at the quietest "
            "point of each window's last 10 s, so memory stays bounded however long the upload is: about "
            "1 MB per second of window at the peak of each transcription. Keep it at least 30 s times "
            "`WHISPER__BATCH_SIZE`, so batched mode fills its batches."
        ),
    )


class Settings(BaseSettings):
    """Server settings. Every field is an environment variable of the same name in upper case."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        case_sensitive=False,
    )

    # --- server ---
    uvicorn_host: str = Field(default="0.0.0.0", description="Address `speaches serve` binds to.")
    uvicorn_port: int = Field(default=8000, ge=1, le=65535, description="Port `speaches serve` listens on.")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="Log level of the server and of uvicorn."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description=(
            "When set, every endpoint but `/health`, `/health/ready`, the docs and the playground's page requires "
            "`Authorization: Bearer <key>` (WebSockets may pass `api_key=` in the query, or the subprotocol "
            "`openai-insecure-api-key.<key>`, instead)."
        ),
    )
    allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CORS origins allowed to call the API, comma separated or a JSON list; none by default.",
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest accepted upload (a `multipart/form-data` body: the audio) in bytes; larger ones get 413.",
    )
    max_json_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description=(
            "Largest accepted body of any request that is not a `multipart/form-data` upload (JSON and the rest), "
            "in bytes; larger ones get 413. JSON is parsed on the event loop, so this stays small."
        ),
    )
    max_pending_upload_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024,
        description=(
            "Total bytes of request bodies the server holds at once: uploads being received, spooled while they "
            "wait for inference, or being transcribed. A request that would pass it gets 429 with `Retry-After`."
        ),
    )
    send_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long one write of a response may wait for a client that stopped reading. Past it the response "
            "is ended and the connection closed, so the client gives back the model and memory it held. A client "
            "that reads slowly but steadily (a player at real time) is never cut."
        ),
    )
    sse_ping_seconds: float = Field(
        default=15.0,
        ge=0,
        description=(
            "Streamed (server-sent events) answers send a keep-alive comment this often while no event is due, "
            "so proxies keep the connection open; 0 sends none."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    enable_ui: bool = Field(
        default=True,
        description=(
            "Serve the browser playground at `/` (its files under `/ui/`). The page and its files load without "
            "`API_KEY`; every call it makes sends the key typed into it."
        ),
    )

    # --- inference pool ---
    inference_concurrency: int = Field(
        default=2,
        ge=1,
        description="Inference jobs (transcription, synthesis) that run at once; the rest wait in a queue.",
    )
    max_queued_requests: int = Field(
        default=64,
        ge=0,
        description="Jobs allowed to wait for the inference pool; past this, new requests get 429.",
    )

    # --- models ---
    preload_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Models to load at startup, comma separated or a JSON list; `/health/ready` waits for them.",
    )
    stt_model_ttl: int = Field(
        default=300,
        ge=-1,
        description="Seconds a speech-to-text model may stay idle before it is unloaded; -1 never, 0 right after use.",
    )
    tts_model_ttl: int = Field(
        default=300,
        ge=-1,
        description="Seconds a text-to-speech voice may stay idle before it is unloaded; -1 never, 0 right after use.",
    )
    stt_max_loaded_models: int = Field(
        default=2,
        ge=1,
        description=(
            "Speech-to-text models kept in memory at once. A request for another one unloads the least recently "
            "used idle model first; when every one is in use, it gets 503 with `Retry-After`."
        ),
    )
    tts_max_loaded_models: int = Field(
        default=4,
        ge=1,
        description=(
            "Text-to-speech voices kept in memory at once; as `STT_MAX_LOADED_MODELS`, least recently used idle "
            "voice first."
        ),
    )
    max_concurrent_model_loads: int = Field(
        default=2,
        ge=1,
        description=(
            "Model loads and downloads that run at once (model I/O has its own threads, apart from inference); "
            "up to `MAX_QUEUED_REQUESTS` more wait, past that a request gets 503."
        ),
    )
    downloadable_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "When set, only these models may be downloaded from the Hugging Face Hub (by a request or "
            "`POST /v1/models`): ids or shell-style patterns, comma separated or a JSON list, e.g. "
            "`Systran/*,en_US-*`. Whisper models match by repo id, piper voices by voice name. Unset allows any."
        ),
    )
    max_download_bytes: int = Field(
        default=4 * 1024 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "Largest model download, in bytes, as the Hub reports the files' sizes before anything is fetched; "
            "a larger model is refused with 413."
        ),
    )
    models_dir: Path | None = Field(
        default=None,
        description=(
            "A folder of local models: `MODELS_DIR/<model id>` (e.g. `MODELS_DIR/Systran/faster-whisper-small`) "
            "is used before the Hugging Face cache."
        ),
    )
    allow_local_model_paths: bool = Field(
        default=False,
        description="Allow a request to name a model by an absolute folder path on the server.",
    )
    bundled_models_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "speaches" / "bundled",
        description="Where bundled models that ship in parts are assembled once (the base whisper model).",
    )
    whisper: WhisperConfig = Field(default_factory=WhisperConfig)
    default_language: str | None = Field(
        default=None,
        description="Language assumed when a transcription request names none; unset detects it.",
    )
    max_audio_seconds: float = Field(
        default=7200.0,
        gt=0,
        description=(
            "Longest audio one transcription or translation accepts, in seconds. A file that declares a longer "
            "duration is refused with 413 before anything is transcribed; one that does not say is counted while "
            "it is decoded and refused once it passes the limit, so no request transcribes more than this."
        ),
    )

    # --- text to speech ---
    tts_default_voice: str = Field(
        default="en_US-joe-medium",
        description="Piper voice used for OpenAI's voice names (alloy, echo, ...) and when no voice is given.",
    )
    tts_voice_aliases: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Per-name overrides of the OpenAI voice mapping as JSON, e.g. `{"nova": "en_US-amy-medium"}`; '
            "names not listed map to `TTS_DEFAULT_VOICE`."
        ),
    )
    tts_max_input_chars: int = Field(
        default=4096, ge=1, description="Longest `input` accepted by /v1/audio/speech, in characters."
    )

    # --- voice conversations (chat completions) ---
    chat_completion_base_url: str | None = Field(
        default=None,
        description=(
            "The OpenAI-compatible chat server that does the thinking for `POST /v1/chat/completions`, up to its "
            "`/v1`: e.g. `http://localhost:11434/v1` (Ollama) or `http://localhost:8080/v1` (llama.cpp's "
            "`llama-server`). Unset, chat completions answer 503 saying so."
        ),
    )
    chat_completion_api_key: SecretStr | None = Field(
        default=None,
        description="Sent to that server as `Authorization: Bearer <key>`; unset sends none.",
    )
    chat_completion_transcription_model: str = Field(
        default="whisper-1",
        description="The speech-to-text model that transcribes `input_audio` before the chat server sees it.",
    )
    chat_completion_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Longest wait for the chat server's next bytes (a slow local model may think a while before its "
            "first word); connecting may take at most 10 s."
        ),
    )

    # --- live transcription ---
    live_idle_timeout_seconds: float = Field(
        default=300.0, gt=0, description="A live session that receives nothing for this long is closed."
    )
    live_max_session_seconds: float = Field(
        default=4 * 3600.0,
        gt=0,
        description=(
            "Longest a live session may last (wall clock), however often it receives: then its transcript is "
            "finished and it closes with 1001, as on an idle timeout."
        ),
    )
    live_max_frame_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest WebSocket frame (audio or text) accepted; larger frames close with 1009.",
    )
    live_min_chunk_seconds: float = Field(
        default=1.0, gt=0, description="New audio needed before a live session transcribes again."
    )

    # --- Realtime API ---
    realtime_max_event_bytes: int = Field(
        default=15 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest client event of a Realtime API session (a JSON text frame, base64 audio included); larger "
            "ones close the session with 1009. OpenAI's own limit for an audio append is 15 MiB. Realtime "
            "sessions also follow `LIVE_IDLE_TIMEOUT_SECONDS`, `LIVE_MAX_SESSION_SECONDS` and "
            "`LIVE_MIN_CHUNK_SECONDS`."
        ),
    )

    # --- Wyoming (Home Assistant) ---
    wyoming_uri: str | None = Field(
        default=None,
        description=(
            "Also serve the Wyoming protocol (Home Assistant's voice pipeline) on this address, e.g. "
            "`tcp://0.0.0.0:10300` or `unix:///run/speaches/wyoming.sock`; off when unset. Wyoming has no "
            "authentication: `API_KEY` does not apply to it, so expose it only to a trusted network."
        ),
    )
    wyoming_idle_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A Wyoming connection that sends nothing (or reads nothing we send) for this long is closed, "
            "and whatever it was doing is given up."
        ),
    )

    @field_validator("wyoming_uri")
    @classmethod
    def _check_wyoming_uri(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_wyoming_uri(value)
        return value.strip()

    @field_validator("chat_completion_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://localhost:11434/v1")
        return value

    @field_validator("allow_origins", "preload_models", "downloadable_models", mode="before")
    @classmethod
    def _parse_list(cls, value: object) -> object:
        """Environment lists may be comma separated (`a,b`) or JSON (`["a","b"]`)."""
        return parse_list(value)


def parse_list(value: object) -> object:
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            if not isinstance(parsed, list):
                raise ValueError("expected a JSON list")
            return [str(item).strip() for item in parsed if str(item).strip()]
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def parse_wyoming_uri(uri: str) -> tuple[Literal["tcp"], str, int] | tuple[Literal["unix"], str, None]:
    """`tcp://HOST:PORT` -> ("tcp", host, port); `unix:///path` -> ("unix", path, None). ValueError otherwise."""
    parsed = urlsplit(uri.strip())
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError as error:
            raise ValueError(f"WYOMING_URI {uri!r} has an invalid port: {error}") from error
        if not parsed.hostname or port is None:
            raise ValueError(f"WYOMING_URI {uri!r} needs a host and a port, e.g. tcp://0.0.0.0:10300")
        return "tcp", parsed.hostname, port
    if parsed.scheme == "unix":
        path = parsed.path or parsed.netloc
        if not path:
            raise ValueError(f"WYOMING_URI {uri!r} needs a socket path, e.g. unix:///run/speaches/wyoming.sock")
        return "unix", path, None
    raise ValueError(f"WYOMING_URI {uri!r} must start with tcp:// or unix://")
