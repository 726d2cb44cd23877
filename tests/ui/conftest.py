"""A real server with API_KEY set, and Debian's chromium driven by Playwright against it.

One server and one browser serve the whole module; each test gets a fresh browser context (its own
localStorage) whose page fails the test on any console error, uncaught exception, or request that
leaves the server's origin.
"""

from __future__ import annotations

import os
import re
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, WebSocket, sync_playwright

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, REPO_ROOT, Server, running_server

CHROMIUM = Path("/usr/bin/chromium")
API_KEY = "playground-test-key"
# The fake microphone loops its file: jfk, then silence long enough to press Stop in.
FAKE_MIC_SILENCE_SECONDS = 20
FAKE_MIC_RATE = 48_000

# Set to a folder (docs/images/playground) to write the screenshots the docs show.
SCREENSHOTS_DIR = os.environ.get("PLAYGROUND_SCREENSHOTS_DIR")

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def fake_microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jfk.flac as the 16-bit wav chromium's fake capture device plays, followed by silence."""
    samples = decode_audio(AUDIO_DIR / "jfk.flac", FAKE_MIC_RATE)
    samples = np.concatenate([samples, np.zeros(FAKE_MIC_SILENCE_SECONDS * FAKE_MIC_RATE, dtype=np.float32)])
    path = tmp_path_factory.mktemp("fake-mic") / "jfk.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_MIC_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def ui_server() -> Iterator[Server]:
    with running_server({"API_KEY": API_KEY, "STT_MODEL_TTL": "-1", "TTS_MODEL_TTL": "-1"}) as server:
        yield server
        assert server.alive(), f"the server died during the browser tests:\n{server.logs()}"


@pytest.fixture(scope="module")
def browser(fake_microphone_wav: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*BROWSER_ARGS, f"--use-file-for-fake-audio-capture={fake_microphone_wav}"],
        )
        yield launched
        launched.close()


@dataclass
class PageWatch:
    """What a page did that a test must not let pass: console errors, exceptions, foreign requests."""

    origin: str
    allowed_errors: list[re.Pattern[str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(pattern.search(message.text) for pattern in self.allowed_errors):
            self.errors.append(f"console error: {message.text} at {message.location}")

    def page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def request(self, request: Request) -> None:
        self.requests.append(request.url)

    def websocket(self, socket: WebSocket) -> None:
        self.requests.append(socket.url)

    def allow_error(self, pattern: str) -> None:
        self.allowed_errors.append(re.compile(pattern))

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)
        websocket_origin = self.origin.replace("http://", "ws://", 1)
        foreign = [
            url
            for url in self.requests
            if not url.startswith((f"{self.origin}/", f"{websocket_origin}/", "data:", "blob:"))
        ]
        assert not foreign, f"the page asked someone other than its server: {foreign}"


@dataclass
class Playground:
    page: Page
    watch: PageWatch
    server: Server

    def open(self, tab: str) -> None:
        self.page.get_by_role("tab", name=tab).click()

    def screenshot(self, name: str) -> None:
        """Always taken (so the screenshot path is exercised); kept in the docs when asked for."""
        image = self.page.screenshot(full_page=True)
        assert image[:8] == b"\x89PNG\r\n\x1a\n"
        if SCREENSHOTS_DIR:
            folder = REPO_ROOT / SCREENSHOTS_DIR
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.png").write_bytes(image)


@pytest.fixture
def open_playground(browser: Browser, ui_server: Server) -> Iterator[Callable[..., Playground]]:
    contexts: list[BrowserContext] = []
    watches: list[PageWatch] = []

    def opener(*, api_key: str | None = API_KEY, viewport: dict[str, int] | None = None, hash: str = "") -> Playground:
        context = browser.new_context(
            viewport=viewport or {"width": 1100, "height": 900}, accept_downloads=True, color_scheme="light"
        )
        context.set_default_timeout(60_000)
        contexts.append(context)
        if api_key is not None:
            context.add_init_script(f"localStorage.setItem('speaches.apiKey', {api_key!r});")
        page = context.new_page()
        watch = PageWatch(ui_server.url)
        watches.append(watch)
        page.on("console", watch.console)
        page.on("pageerror", watch.page_error)
        page.on("request", watch.request)
        page.on("websocket", watch.websocket)
        response = page.goto(f"{ui_server.url}/{hash}")
        assert response is not None
        assert response.status == 200
        return Playground(page, watch, ui_server)

    yield opener
    for context in contexts:
        context.close()
    for watch in watches:
        watch.check()
