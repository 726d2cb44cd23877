"""Which of the app's routes a request's path matches, for code that runs outside the router.

The 405 handler needs every method a path accepts (Starlette names only the first matching route's),
and the metrics and access log need the route template of requests answered before routing (401,
413, CORS preflight). FastAPI keeps included routers as lazy groups in `app.routes`; its
`iter_route_contexts` flattens them into routes with a `path`, `methods` and `matches`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.routing import Match
from starlette.types import Scope

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI: included routes are plain routes already
    iter_route_contexts = None


def _routes(app: Any) -> Iterator[Any]:
    routes = getattr(app, "routes", ())
    if iter_route_contexts is None:
        yield from routes
    else:
        yield from iter_route_contexts(routes)


def matching_routes(app: Any, scope: Scope) -> Iterator[tuple[Match, Any]]:
    """Each route whose path matches the scope's, fully or only by path (another method), in order."""
    for route in _routes(app):
        match, _ = route.matches(dict(scope))
        if match is not Match.NONE:
            yield match, route


def route_template(app: Any, scope: Scope) -> str | None:
    """The template of the route a request reaches (or would reach), e.g. `/v1/models/{model_id:path}`."""
    partial = None
    for match, route in matching_routes(app, scope):
        if match is Match.FULL:
            return route.path
        partial = partial or route.path
    return partial


def allowed_methods(app: Any, scope: Scope) -> set[str]:
    """Every method some route accepts on the scope's path."""
    allowed: set[str] = set()
    for _match, route in matching_routes(app, scope):
        allowed.update(route.methods or ())
    return allowed
