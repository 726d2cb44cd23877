"""deploy/nginx/speaches.conf, run for real in front of N replicas on loopback (tests and bench/replicas.py).

The shipped file is used as it is, with only its `listen` address and its upstream `server` lines
rewritten to the ports in use; nginx runs unprivileged-path (temp files, pid, logs in a temp folder),
in the foreground, as a child process that is stopped on exit.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO_ROOT, free_port

SHIPPED_CONFIG = REPO_ROOT / "deploy" / "nginx" / "speaches.conf"
_UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+ (.*);$", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*)listen 127\.0\.0\.1:\d+;$", re.MULTILINE)

# What nginx logs per request: enough to tell which replica served what, and when. The upstream
# field lists every replica tried, comma separated, the one that answered last.
LOG_FORMAT = '$msec $status $request_time "$upstream_addr" "$request"'
_LOG_LINE = re.compile(r'^(?P<at>\S+) (?P<status>\d+) \S+ "(?P<upstreams>[^"]*)" ')


def config_for(ports: list[int], listen_port: int) -> str:
    """The shipped config, aimed at these replica ports and listening on `listen_port`."""
    shipped = SHIPPED_CONFIG.read_text()
    servers = _UPSTREAM_SERVER.findall(shipped)
    assert servers, f"{SHIPPED_CONFIG} has no `server 127.0.0.1:PORT ...;` lines in its upstream"
    indent, options = servers[0]
    replicas = "\n".join(f"{indent}server 127.0.0.1:{port} {options};" for port in ports)
    first = _UPSTREAM_SERVER.search(shipped)
    assert first is not None
    # Replace the whole run of example servers by ours.
    without = _UPSTREAM_SERVER.sub("", shipped)
    config = without[: first.start()] + replicas + "\n" + without[first.start() :].lstrip("\n")
    config, listens = _LISTEN.subn(rf"\g<1>listen 127.0.0.1:{listen_port};", config)
    assert listens == 1, f"{SHIPPED_CONFIG} must have one `listen 127.0.0.1:PORT;`"
    return config


@dataclass
class Balancer:
    url: str
    process: subprocess.Popen[bytes]
    folder: Path

    @property
    def access_log(self) -> Path:
        return self.folder / "access.log"

    def log_entries(self) -> list[tuple[float, int, list[str]]]:
        """(time, status, replicas tried in order) of every request nginx has finished."""
        entries = []
        for line in self.access_log.read_text().splitlines():
            match = _LOG_LINE.match(line)
            assert match is not None, f"unexpected access log line: {line!r}"
            upstreams = [address for address in match["upstreams"].split(", ") if address != "-"]
            entries.append((float(match["at"]), int(match["status"]), upstreams))
        return entries

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")


@contextlib.contextmanager
def nginx_in_front_of(ports: list[int]) -> Iterator[Balancer]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).is_file(), "nginx is not installed (Debian: apt-get install nginx-light)"
    folder = Path(tempfile.mkdtemp(prefix="speaches-nginx-"))
    listen_port = free_port()
    (folder / "speaches.conf").write_text(config_for(ports, listen_port))
    temp_paths = "\n".join(
        f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (folder / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    log_format replicas '{LOG_FORMAT}';
    access_log {folder / "access.log"} replicas;
{temp_paths}
    include {folder / "speaches.conf"};
}}
"""
    )
    check = subprocess.run([nginx, "-t", "-c", str(folder / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([nginx, "-c", str(folder / "nginx.conf")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen_port), timeout=1):
                break
            assert process.poll() is None, f"nginx exited: {(folder / 'error.log').read_text()}"
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        yield Balancer(f"http://127.0.0.1:{listen_port}", process, folder)
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish what is open, then exit
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
