"""The `speaches` command."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from speaches.config import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="speaches", description="OpenAI-compatible speech server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server (settings come from the environment / .env)")
    serve.add_argument("--host", help="address to bind (default: UVICORN_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: UVICORN_PORT)")
    commands.add_parser("prepare", help="assemble the bundled models now instead of at first use")
    args = parser.parse_args(argv)

    settings = Settings()
    if args.command == "prepare":
        from speaches.models.sources import ensure_bundled_models

        ensure_bundled_models(settings)
        return

    import uvicorn

    # uvicorn handles SIGTERM itself (stop accepting, let requests finish within the grace period,
    # run the lifespan shutdown), then restores the previous handler and re-raises the signal. With
    # the default handler that re-raise kills the process (exit status -15); this one makes a
    # completed graceful shutdown exit 0, as container runtimes and supervisors expect.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "speaches.main:create_app",
        factory=True,
        host=args.host or settings.uvicorn_host,
        port=args.port or settings.uvicorn_port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # Requests are logged by speaches' own middleware, with their request id.
        access_log=False,
    )


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    sys.exit(0)


if __name__ == "__main__":
    main()
