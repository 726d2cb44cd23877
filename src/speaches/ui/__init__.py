"""The browser playground: a page at `/` that drives the public API, so it also shows how to call it."""
