"""The HTTP layer: error handlers, middleware, route matching and the dependencies routes take."""
