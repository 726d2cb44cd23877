"""Wyoming's own Prometheus series, on the same registry `GET /metrics` exposes.

Audio seconds, model loads and the inference pool are counted by the shared work they go through,
exactly as for HTTP; these add what only Wyoming has: its requests and open connections.
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter, Gauge

RequestKind = Literal["describe", "transcribe", "synthesize", "synthesize_stream"]
Outcome = Literal["ok", "error"]

WYOMING_REQUESTS = Counter(
    "speaches_wyoming_requests",
    "Wyoming requests answered, by kind (describe, transcribe, synthesize, synthesize_stream) and outcome.",
    ["kind", "outcome"],
)
WYOMING_CONNECTIONS = Gauge("speaches_wyoming_connections", "Wyoming connections open now.")

for _kind in get_args(RequestKind):
    for _outcome in get_args(Outcome):
        WYOMING_REQUESTS.labels(_kind, _outcome)


def record_request(kind: RequestKind, outcome: Outcome) -> None:
    WYOMING_REQUESTS.labels(kind, outcome).inc()
