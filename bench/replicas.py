"""Three replicas behind nginx (deploy/nginx/speaches.conf) on loopback, under bench/soak.py's clients.

What Kubernetes runs (pods of `speaches serve` behind an nginx Ingress), minus Kubernetes: three
`speaches serve` processes with PRELOAD_MODELS warm before traffic, and Debian's nginx with the
shipped config (least_conn, WebSocket upgrade) in front of them.

Phase 1, steady: the soak's mixed traffic (transcriptions, SSE streams, translations, speech, live
WebSocket sessions, every answer checked) through nginx for ``--duration`` seconds. Target: 0 errors
(429s from a full queue are counted apart, as in the soak).

Phase 2, a replica lost: the same traffic again, and halfway one replica is killed with SIGKILL.
Targets: every failure was in flight at the kill (started before it, ended after it), each one a
clean error (nginx's OpenAI-shaped 502, or a closed WebSocket); every request started after the kill
is served, by the two replicas left.

Printed as JSON: each phase's soak summary, how nginx spread the requests (its access log), the
failures, and the load average before and after. Run from the repository root:
``uv run python -m bench.replicas [--duration 120] [--clients 24]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from bench.soak import VOICE, drive, summarize
from tests.containers.balancer import Balancer, nginx_in_front_of
from tests.helpers import BASE, TINY_EN, Server

REPLICAS = 3
# Time stamps come from two clocks read a few microseconds apart (the request's own timer and the
# moment it is recorded); a failure within this of the kill still counts as in flight at it.
CLOCK_SLACK_SECONDS = 0.05


def requests_in_progress(server: Server) -> float:
    """HTTP requests and WebSocket sessions the replica is serving now (its own gauge)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("speaches_http_requests_in_progress{")
    )


async def phase(
    balancer: Balancer, servers: list[Server], duration: float, clients: int, seed: int, *, kill_after: float | None
) -> dict[str, Any]:
    first_log_entry = len(balancer.log_entries())
    pids = [server.process.pid for server in servers if server.process is not None and server.alive()]
    kill: dict[str, Any] = {}

    async def kill_one() -> None:
        assert kill_after is not None
        await asyncio.sleep(kill_after)
        victim = servers[1]
        assert victim.process is not None
        kill["in_progress_on_it"] = await asyncio.to_thread(requests_in_progress, victim)
        os.kill(victim.process.pid, signal.SIGKILL)
        kill["at"] = time.monotonic()
        kill["replica"] = f"127.0.0.1:{victim.port}"

    killer = asyncio.create_task(kill_one()) if kill_after is not None else None
    stats = await drive(balancer.url, pids, duration, clients, seed)
    if killer is not None:
        await killer

    summary = summarize(stats, duration, clients)
    entries = balancer.log_entries()[first_log_entry:]
    summary["served_by_replica"] = dict(
        Counter(upstreams[-1] for _at, status, upstreams in entries if upstreams and status < 500)
    )
    summary["nginx_statuses"] = dict(Counter(str(status) for _at, status, _upstreams in entries))
    if kill:
        killed_at = kill["at"]
        failures = [o for o in stats.outcomes if not o.ok and o.status != "429"]
        in_flight = [
            o
            for o in failures
            if o.ended - o.seconds <= killed_at + CLOCK_SLACK_SECONDS and o.ended >= killed_at - CLOCK_SLACK_SECONDS
        ]
        started_after = [o for o in stats.outcomes if o.ended - o.seconds > killed_at + CLOCK_SLACK_SECONDS]
        wall_at_kill = time.time() - (time.monotonic() - killed_at)
        summary["kill"] = {
            "replica": kill["replica"],
            "at_s": round(kill_after or 0.0, 1),
            "requests_in_progress_on_it_just_before": kill["in_progress_on_it"],
            "failures": len(failures),
            "failures_in_flight_at_kill": len(in_flight),
            "failures_not_in_flight": len(failures) - len(in_flight),
            "failures_by_kind_and_status": dict(Counter(f"{o.kind} {o.status}" for o in failures)),
            "failure_details": sorted({o.detail[:160] for o in failures}),
            "started_after_kill": len(started_after),
            "served_of_those": sum(1 for o in started_after if o.ok),
            "nginx_502_on_killed_replica": sum(
                1 for _at, status, upstreams in entries if status == 502 and kill["replica"] in upstreams
            ),
            "served_by_killed_replica_after_kill": sum(
                1
                for at, status, upstreams in entries
                if at > wall_at_kill + 1 and status < 500 and upstreams and upstreams[-1] == kill["replica"]
            ),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of traffic per phase (default 120)")
    parser.add_argument("--clients", type=int, default=24, help="concurrent clients (default 24)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the clients' choices")
    parser.add_argument("--output", type=Path, help="also write the summary here as JSON")
    args = parser.parse_args()

    env = {"PRELOAD_MODELS": f"{TINY_EN},{BASE},{VOICE}", "STT_MODEL_TTL": "-1", "TTS_MODEL_TTL": "-1"}
    load_before = os.getloadavg()
    servers = [Server(env) for _ in range(REPLICAS)]
    result: dict[str, Any] = {"replicas": REPLICAS, "cpu_count": os.cpu_count(), "load_before": load_before}
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + 300
        for server in servers:
            while httpx.get(f"{server.url}/health/ready", timeout=5).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"models did not load within 300 s:\n{server.logs()}")
                time.sleep(0.5)
        with nginx_in_front_of([server.port for server in servers]) as balancer:
            result["steady"] = asyncio.run(
                phase(balancer, servers, args.duration, args.clients, args.seed, kill_after=None)
            )
            result["load_after_steady"] = os.getloadavg()
            print(json.dumps(result, indent=2), flush=True)  # in case the second phase goes wrong
            result["replica_lost"] = asyncio.run(
                phase(balancer, servers, args.duration, args.clients, args.seed + 1, kill_after=args.duration / 2)
            )
        result["load_after"] = os.getloadavg()
    finally:
        for server in servers:
            server.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


if __name__ == "__main__":
    main()
