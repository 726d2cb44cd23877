"""The OpenAI wire shapes of /v1/audio/transcriptions and /v1/audio/translations.

Requests are multipart forms, as the `openai` SDK sends them: lists go as repeated `name[]` fields
(`timestamp_granularities[]=word`), booleans as `true`/`false`. Responses mirror the SDK's
`Transcription`, `TranscriptionVerbose`, `TranslationVerbose`, `TranscriptionSegment`,
`TranscriptionWord` and the streaming `TranscriptionTextDeltaEvent` / `TranscriptionTextDoneEvent`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import UploadFile
from pydantic import BaseModel, Field

from speaches.errors import InvalidRequestError

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
TimestampGranularity = Literal["segment", "word"]
Task = Literal["transcribe", "translate"]

# Whisper's languages, code -> the lower-case English name OpenAI's verbose_json reports.
LANGUAGE_NAMES: dict[str, str] = {
    "af": "afrikaans",
    "am": "amharic",
    "ar": "arabic",
    "as": "assamese",
    "az": "azerbaijani",
    "ba": "bashkir",
    "be": "belarusian",
    "bg": "bulgarian",
    "bn": "bengali",
    "bo": "tibetan",
    "br": "breton",
    "bs": "bosnian",
    "ca": "catalan",
    "cs": "czech",
    "cy": "welsh",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fa": "persian",
    "fi": "finnish",
    "fo": "faroese",
    "fr": "french",
    "gl": "galician",
    "gu": "gujarati",
    "ha": "hausa",
    "haw": "hawaiian",
    "he": "hebrew",
    "hi": "hindi",
    "hr": "croatian",
    "ht": "haitian creole",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "is": "icelandic",
    "it": "italian",
    "ja": "japanese",
    "jw": "javanese",
    "ka": "georgian",
    "kk": "kazakh",
    "km": "khmer",
    "kn": "kannada",
    "ko": "korean",
    "la": "latin",
    "lb": "luxembourgish",
    "ln": "lingala",
    "lo": "lao",
    "lt": "lithuanian",
    "lv": "latvian",
    "mg": "malagasy",
    "mi": "maori",
    "mk": "macedonian",
    "ml": "malayalam",
    "mn": "mongolian",
    "mr": "marathi",
    "ms": "malay",
    "mt": "maltese",
    "my": "myanmar",
    "ne": "nepali",
    "nl": "dutch",
    "nn": "nynorsk",
    "no": "norwegian",
    "oc": "occitan",
    "pa": "punjabi",
    "pl": "polish",
    "ps": "pashto",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sa": "sanskrit",
    "sd": "sindhi",
    "si": "sinhala",
    "sk": "slovak",
    "sl": "slovenian",
    "sn": "shona",
    "so": "somali",
    "sq": "albanian",
    "sr": "serbian",
    "su": "sundanese",
    "sv": "swedish",
    "sw": "swahili",
    "ta": "tamil",
    "te": "telugu",
    "tg": "tajik",
    "th": "thai",
    "tk": "turkmen",
    "tl": "tagalog",
    "tr": "turkish",
    "tt": "tatar",
    "uk": "ukrainian",
    "ur": "urdu",
    "uz": "uzbek",
    "vi": "vietnamese",
    "yi": "yiddish",
    "yo": "yoruba",
    "yue": "cantonese",
    "zh": "chinese",
}
_CODES_BY_NAME = {name: code for code, name in LANGUAGE_NAMES.items()}


def language_code(language: str | None) -> str | None:
    """A request's `language` as Whisper's code: ISO-639-1 (`de`) or the English name (`german`). 400 if neither."""
    if language is None or not language.strip():
        return None
    wanted = language.strip().lower()
    if wanted in LANGUAGE_NAMES:
        return wanted
    if wanted in _CODES_BY_NAME:
        return _CODES_BY_NAME[wanted]
    raise InvalidRequestError(
        f"Unsupported language '{language}'. Use an ISO-639-1 code such as 'en', 'de' or 'fr' "
        "(or leave it out to detect the language).",
        param="language",
        code="unsupported_language",
    )


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


# --- requests ---


class _AudioForm(BaseModel):
    """Fields both endpoints share."""

    file: UploadFile = Field(description="The audio: any container and codec FFmpeg reads (mp3, wav, flac, ogg, ...).")
    model: str = Field(
        description="A whisper model id, e.g. `Systran/faster-whisper-base`; `whisper-1` means the default model."
    )
    prompt: str | None = Field(default=None, description="Text to guide the style or continue a previous segment.")
    response_format: ResponseFormat = Field(
        default="json", description="`json`, `text`, `srt`, `vtt` or `verbose_json`."
    )
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Sampling temperature; decoding falls back to higher temperatures from here when it fails.",
    )
    stream: bool = Field(
        default=False,
        description="Answer with server-sent events (`transcript.text.delta`, then `transcript.text.done`).",
    )
    hotwords: str | None = Field(default=None, description="Extension: words or phrases the model should favour.")
    vad_filter: bool | None = Field(
        default=None,
        description=(
            "Extension: drop non-speech with the Silero VAD before decoding. Unset: on in batched mode, off otherwise; "
            "`false` also turns batched mode off for the request."
        ),
    )


class TranscriptionForm(_AudioForm):
    language: str | None = Field(default=None, description="The spoken language (`en`, `de`, ...); unset detects it.")
    timestamp_granularities: list[TimestampGranularity] = Field(
        default_factory=list,
        alias="timestamp_granularities[]",
        description="`segment` and/or `word`; word timestamps need `response_format=verbose_json`.",
    )
    timestamp_granularities_bare: list[TimestampGranularity] = Field(
        default_factory=list,
        alias="timestamp_granularities",
        description="The same as `timestamp_granularities[]`, for clients that send the bare name.",
    )

    def granularities(self) -> set[TimestampGranularity]:
        """The requested granularities (segment by default). Word timestamps only fit verbose_json."""
        requested = set(self.timestamp_granularities) | set(self.timestamp_granularities_bare)
        if "word" in requested and self.response_format != "verbose_json":
            raise InvalidRequestError(
                "Word timestamps need response_format=verbose_json; "
                f"response_format={self.response_format} cannot carry them.",
                param="timestamp_granularities",
            )
        return requested or {"segment"}


class TranslationForm(_AudioForm):
    pass


# --- responses ---


class Word(BaseModel):
    word: str
    start: float
    end: float


class Segment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionJson(BaseModel):
    text: str
    usage: DurationUsage


class TranscriptionVerboseJson(BaseModel):
    task: Task
    language: str
    duration: float
    text: str
    segments: list[Segment] | None = None
    words: list[Word] | None = None
    usage: DurationUsage


class TextDeltaEvent(BaseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TextDoneEvent(BaseModel):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
