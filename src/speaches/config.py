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

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

OPENAI_VOICE_NAMES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


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
        default=0, ge=0, description="CPU threads per model for inference; 0 lets CTranslate2 choose."
    )
    num_workers: int = Field(
        default=1,
        ge=1,
        description="Transcriptions one loaded model can run at once (CTranslate2 replicas share the weights).",
    )
    use_batched_mode: bool = Field(
        default=True,
        description=(
            "Decode long files with faster-whisper's batched pipeline (VAD-split chunks decoded in batches). "
            "Much faster on long audio; word error rate on the test audio is unchanged. It applies to `json`, "
            "`text` and streamed answers; `srt`, `vtt` and `verbose_json` decode sequentially, because batched "
            "mode packs speech from across pauses into one segment, which would spoil their timings."
        ),
    )
    batch_size: int = Field(default=8, ge=1, le=64, description="Chunks per batch in batched mode.")
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
            "When set, every endpoint but `/health`, `/health/ready` and the docs requires "
            "`Authorization: Bearer <key>` (WebSockets may pass `api_key=` in the query instead)."
        ),
    )
    allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CORS origins allowed to call the API, comma separated or a JSON list; none by default.",
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest accepted request body (uploaded audio) in bytes; larger uploads get 413.",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
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

    # --- live transcription ---
    live_idle_timeout_seconds: float = Field(
        default=300.0, gt=0, description="A live session that receives nothing for this long is closed."
    )
    live_max_frame_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest WebSocket frame accepted; larger frames close with 1009.",
    )
    live_min_chunk_seconds: float = Field(
        default=1.0, gt=0, description="New audio needed before a live session transcribes again."
    )

    def voice_for(self, name: str) -> str:
        """The piper voice an OpenAI voice name stands for; other names are piper voices already."""
        if name in self.tts_voice_aliases:
            return self.tts_voice_aliases[name]
        if name.lower() in OPENAI_VOICE_NAMES:
            return self.tts_default_voice
        return name

    @field_validator("allow_origins", "preload_models", mode="before")
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
