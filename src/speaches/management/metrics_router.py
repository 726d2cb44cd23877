"""`GET /metrics`: the Prometheus metrics of `speaches.metrics`, with the gauges that read live objects."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from speaches import metrics
from speaches.models.catalog import Kind
from speaches.models.manager import State as ModelState
from speaches.state import AppState
from speaches.web.dependencies import State

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics(state: State) -> PlainTextResponse:
    """Prometheus metrics in the text exposition format."""
    _sample_state(state)
    return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _sample_state(state: AppState) -> None:
    """Gauges that read the live objects, refreshed at scrape time."""
    metrics.INFERENCE_QUEUE_DEPTH.set(state.pool.waiting)
    metrics.INFERENCE_RUNNING.set(state.pool.running)
    metrics.INFERENCE_CONCURRENCY.set(state.pool.concurrency)
    loaded = dict.fromkeys(Kind, 0)
    for model in state.models.status():
        if model.state is ModelState.LOADED:
            loaded[model.kind] += 1
    for kind, count in loaded.items():
        metrics.MODELS_LOADED.labels(kind).set(count)
