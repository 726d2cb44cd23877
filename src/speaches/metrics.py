"""Prometheus metrics: the counters, gauges and histograms, and the calls that record into them.

`GET /metrics` (in `speaches.management.metrics_router`) exposes them.

Labels stay bounded: routes are labelled by their template (`/v1/models/{model_id}`), never the raw
path; unknown methods collapse to OTHER; models are labelled by kind only. Capability code reports
what it processed with one call: ``record_audio_seconds("transcription", duration)``.
The default registry also carries the process collector (resident memory, CPU seconds, open fds).
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from speaches.models.catalog import Kind

# The `_created` timestamp series double the output and no dashboard needs them.
disable_created_metrics()

AudioKind = Literal["transcription", "translation", "live", "speech"]

UNMATCHED_ROUTE = "unmatched"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WEBSOCKET"})

HTTP_REQUESTS = Counter(
    "speaches_http_requests",
    "HTTP requests answered, by method, route template and status code (WebSocket sessions: method WEBSOCKET).",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "speaches_http_request_duration_seconds",
    "Time from receiving a request to the end of its response body (whole session for WebSockets).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "speaches_http_requests_in_progress", "HTTP requests and WebSocket sessions being served now.", ["method"]
)
AUDIO_SECONDS = Counter(
    "speaches_audio_seconds",
    "Seconds of audio processed: transcription/translation/live input, speech output.",
    ["kind"],
)
MODEL_LOADS = Counter("speaches_model_loads", "Models loaded, by kind.", ["kind"])
MODEL_LOAD_FAILURES = Counter("speaches_model_load_failures", "Model loads that failed, by kind.", ["kind"])
MODEL_LOAD_DURATION = Histogram(
    "speaches_model_load_duration_seconds",
    "Time to load a model, by kind.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
MODEL_UNLOADS = Counter("speaches_model_unloads", "Models unloaded (TTL, API or shutdown), by kind.", ["kind"])
MODELS_LOADED = Gauge("speaches_models_loaded", "Models loaded now, by kind.", ["kind"])
INFERENCE_QUEUE_DEPTH = Gauge("speaches_inference_queue_depth", "Inference jobs waiting for a pool slot.")
INFERENCE_RUNNING = Gauge(
    "speaches_inference_running", "Inference pool slots in use (including work a departed client left running)."
)
INFERENCE_CONCURRENCY = Gauge("speaches_inference_concurrency", "Inference pool size (INFERENCE_CONCURRENCY).")
WHISPER_BATCH_SIZE = Histogram(
    "speaches_whisper_batch_size",
    "Windows one CTranslate2 call decoded together across requests and live sessions, by call "
    "(encode, generate, detect_language, align).",
    ["call"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
WHISPER_BATCH_WAIT = Histogram(
    "speaches_whisper_batch_wait_seconds",
    "Time a whisper model call waited in its model's batch queue before its batch started, by call.",
    ["call"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WHISPER_BATCH_WITHDRAWN = Counter(
    "speaches_whisper_batch_withdrawn",
    "Whisper model calls taken out of a batch queue because their client left, by call.",
    ["call"],
)
WHISPER_CALLS = ("encode", "generate", "detect_language", "align")


# Create the series up front so they read 0 (not "absent") before the first event: rate() and
# alerts then work from the start.
for _audio_kind in get_args(AudioKind):
    AUDIO_SECONDS.labels(_audio_kind)
for _call in WHISPER_CALLS:
    for _per_call in (WHISPER_BATCH_SIZE, WHISPER_BATCH_WAIT, WHISPER_BATCH_WITHDRAWN):
        _per_call.labels(_call)
for _model_kind in Kind:
    for _per_kind in (MODEL_LOADS, MODEL_LOAD_FAILURES, MODEL_UNLOADS, MODELS_LOADED):
        _per_kind.labels(_model_kind)


def record_audio_seconds(kind: AudioKind, seconds: float) -> None:
    """Count audio a request processed: input seconds for speech-to-text, output seconds for speech."""
    if seconds > 0:
        AUDIO_SECONDS.labels(kind).inc(seconds)


def record_model_load(kind: str, seconds: float) -> None:
    MODEL_LOADS.labels(kind).inc()
    MODEL_LOAD_DURATION.labels(kind).observe(seconds)


def record_model_load_failure(kind: str) -> None:
    MODEL_LOAD_FAILURES.labels(kind).inc()


def record_model_unload(kind: str) -> None:
    MODEL_UNLOADS.labels(kind).inc()


def record_http_request(method: str, route: str, status: int, seconds: float) -> None:
    method = method_label(method)
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_REQUEST_DURATION.labels(method, route).observe(seconds)


def method_label(method: str) -> str:
    """The method as a label; any non-standard method a client invents becomes OTHER."""
    method = method.upper()
    return method if method in _KNOWN_METHODS else "OTHER"


def record_batch(call: str, windows: int, waits: list[float]) -> None:
    """One CTranslate2 call over `windows` windows, and how long each merged call waited for it."""
    WHISPER_BATCH_SIZE.labels(call).observe(windows)
    wait = WHISPER_BATCH_WAIT.labels(call)
    for seconds in waits:
        wait.observe(max(seconds, 0.0))


def record_batch_withdrawn(call: str) -> None:
    WHISPER_BATCH_WITHDRAWN.labels(call).inc()
