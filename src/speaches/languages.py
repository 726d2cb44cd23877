"""Languages: the one rule every door (HTTP, the live socket, Realtime, Wyoming) applies to a requested language.

A client names a language by its ISO-639-1 code (`de`) or its English name (`german`, any case); the
server works with Whisper's codes. A named language must be one the model knows: English-only
models refuse `de` rather than silently transcribing English. The configured DEFAULT_LANGUAGE
applies only where the model knows it, and otherwise the language is detected.
"""

from __future__ import annotations

from collections.abc import Collection

from speaches.errors import InvalidRequestError

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


def language_for_model(
    requested: str | None, supported: Collection[str], *, model_id: str, default: str | None = None
) -> str | None:
    """The language to decode in: the requested one if the model knows it (400 if not), else the
    default where the model knows it, else None (detect)."""
    code = language_code(requested)
    if code is None:
        default_code = language_code(default)
        return default_code if default_code in supported else None
    if code not in supported:
        known = sorted(supported)
        listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise InvalidRequestError(
            f"The model '{model_id}' does not support language '{code}'. Use an ISO 639-1 code it knows "
            f"({listed}) or leave language out to detect it.",
            param="language",
            code="unsupported_language",
        )
    return code
