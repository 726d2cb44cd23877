"""The playground at `/`, driven in Debian's chromium against a real server that has API_KEY set.

Every test but the first starts with the key in the page's localStorage, so every call the page makes
must send it: one that did not would be refused and show up as a console error or a missing result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import srt
from playwright.sync_api import Download, Page, WebSocket, expect

from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, normalize, word_error_rate
from tests.ui.conftest import API_KEY, Playground

pytestmark = [pytest.mark.browser, pytest.mark.server]

JFK = AUDIO_DIR / "jfk.flac"
LONG_WAIT_MS = 180_000  # a transcription or a live session on a busy 2-core machine


def _saved(download: Download) -> bytes:
    path = download.path()
    assert path is not None
    return Path(path).read_bytes()


def test_page_loads_without_the_key_and_says_plainly_when_calls_are_refused(open_playground) -> None:
    playground: Playground = open_playground(api_key=None)
    page = playground.page
    # The browser logs each refused call itself; the page must still not log anything of its own.
    playground.watch.allow_error(r"status of 401 \(Unauthorized\)")
    playground.watch.allow_error(r"WebSocket connection to .* failed")

    notice = page.get_by_test_id("notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("needs an API key")
    expect(page.get_by_test_id("speech-voice").locator("option")).to_have_count(0)

    playground.open("Live")
    page.get_by_test_id("live-start").click()
    expect(page.locator("#live-status")).to_contain_text("API key")
    expect(page.get_by_test_id("live-start")).to_be_enabled()

    page.get_by_test_id("api-key").fill("not-the-key")
    playground.open("Models")
    expect(page.locator("#models-status")).to_contain_text("API key entered is not the right one")

    page.get_by_test_id("api-key").fill(API_KEY)
    page.get_by_test_id("api-key").press("Enter")
    expect(notice).to_be_hidden()
    expect(page.get_by_test_id("registry-list")).to_contain_text(TINY_EN)
    expect(page.locator("#models-status")).to_have_text("")
    playground.open("Speak")
    expect(page.get_by_test_id("speech-voice").locator("option")).not_to_have_count(0)
    assert page.evaluate("localStorage.getItem('speaches.apiKey')") == API_KEY
    assert API_KEY not in page.url  # kept in the browser, never put in the address


def test_upload_transcribes_streams_and_downloads_every_format(open_playground) -> None:
    playground: Playground = open_playground()
    page = playground.page
    transcript = page.get_by_test_id("transcript")
    status = page.locator("#transcribe-status")
    page.locator("#transcribe-model").fill(TINY_EN)
    page.locator("#transcribe-language").fill("en")
    page.get_by_test_id("transcribe-file").set_input_files(JFK)

    # verbose_json with word timestamps, not streamed.
    page.locator("#transcribe-stream").uncheck()
    page.locator("#transcribe-format").select_option("verbose_json")
    page.locator("#transcribe-ts-word").check()
    page.get_by_test_id("transcribe-submit").click()
    expect(status).to_contain_text("Done", timeout=LONG_WAIT_MS)
    assert word_error_rate(JFK_TEXT, transcript.inner_text()) < 0.15
    timings = page.locator("#transcribe-response").inner_text()
    assert '"words"' in timings
    assert "country (" in timings  # the readable word list, with times

    # Every format, downloaded: the one shown comes from memory, the others from the server.
    expected_suffix = {"json": "json", "text": "txt", "srt": "srt", "vtt": "vtt", "verbose_json": "verbose.json"}
    bodies: dict[str, str] = {}
    for response_format, suffix in expected_suffix.items():
        with page.expect_download(timeout=LONG_WAIT_MS) as download_info:
            page.get_by_role("button", name=f"Download as {response_format}", exact=True).click()
        assert download_info.value.suggested_filename == f"jfk.{suffix}"
        bodies[response_format] = _saved(download_info.value).decode()
    assert word_error_rate(JFK_TEXT, json.loads(bodies["json"])["text"]) < 0.15
    assert word_error_rate(JFK_TEXT, bodies["text"]) < 0.15
    subtitles = list(srt.parse(bodies["srt"]))
    assert subtitles
    assert word_error_rate(JFK_TEXT, " ".join(cue.content for cue in subtitles)) < 0.15
    assert bodies["vtt"].startswith("WEBVTT")
    verbose = json.loads(bodies["verbose_json"])
    assert verbose["words"]
    assert verbose["words"][-1]["end"] > 9

    # Streamed: the text is shown from the server-sent events as they arrive.
    page.evaluate(
        """() => {
            window.seen = [];
            new MutationObserver(() => window.seen.push([
                document.querySelector('#transcribe-status').textContent,
                document.querySelector('[data-testid=transcript]').textContent,
            ])).observe(document.querySelector('#panel-transcribe'),
                        {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.locator("#transcribe-stream").check()
    with page.expect_response(lambda response: response.url.endswith("/v1/audio/transcriptions")) as response_info:
        page.get_by_test_id("transcribe-submit").click()
    assert response_info.value.headers["content-type"].startswith("text/event-stream")
    expect(status).to_contain_text("Done", timeout=LONG_WAIT_MS)
    assert word_error_rate(JFK_TEXT, transcript.inner_text()) < 0.15
    seen = page.evaluate("window.seen")
    assert any(state.startswith("Receiving") and text for state, text in seen), seen

    # Translation goes to its own endpoint.
    page.locator("#transcribe-task").select_option("translate")
    with page.expect_request(lambda request: request.url.endswith("/v1/audio/translations")):
        page.get_by_test_id("transcribe-submit").click()
    expect(status).to_contain_text("Done", timeout=LONG_WAIT_MS)
    assert word_error_rate(JFK_TEXT, transcript.inner_text()) < 0.2
    page.locator("#transcribe-task").select_option("transcribe")
    playground.screenshot("transcribe")

    # A recording made in the page (MediaRecorder on the fake microphone, which starts jfk afresh).
    record = page.locator("#transcribe-record")
    record.click()
    expect(record).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(5000)
    record.click()
    expect(page.locator("#transcribe-source")).to_contain_text("A recording")
    page.locator("#transcribe-stream").uncheck()
    page.locator("#transcribe-format").select_option("text")
    page.get_by_test_id("transcribe-submit").click()
    expect(status).to_contain_text("Done", timeout=LONG_WAIT_MS)
    assert "my fellow american" in normalize(transcript.inner_text()), transcript.inner_text()


def _audio_state(page: Page) -> dict[str, float | bool]:
    return page.evaluate(
        """() => {
            const audio = document.querySelector('[data-testid=speech-audio]');
            return {duration: audio.duration, currentTime: audio.currentTime, paused: audio.paused,
                    error: audio.error ? audio.error.code : 0, played: audio.played.length};
        }"""
    )


def test_speech_plays_while_it_streams_and_downloads(open_playground) -> None:
    playground: Playground = open_playground(hash="#speech")
    page = playground.page
    status = page.locator("#speech-status")
    expect(page.get_by_test_id("speech-voice")).to_have_value("en_US-joe-medium")
    page.get_by_test_id("speech-input").fill(
        "The first sentence plays while the server still speaks the rest. Here is the second one. And a third."
    )
    page.evaluate(
        """() => {
            const audio = document.querySelector('[data-testid=speech-audio]');
            window.playingStatus = null;
            audio.addEventListener('playing', () => {
                window.playingStatus ??= document.querySelector('#speech-status').textContent;
            });
        }"""
    )
    page.get_by_test_id("speech-submit").click()
    expect(status).to_contain_text("Done", timeout=LONG_WAIT_MS)
    # mp3 went through MediaSource: playback began from the first piece, before the stream had ended.
    assert page.evaluate("window.playingStatus") is not None
    assert "playing while the rest streams" in page.evaluate("window.playingStatus")
    # A function, not an expression: the page's CSP forbids the eval that Playwright runs an expression with.
    page.wait_for_function("() => document.querySelector('[data-testid=speech-audio]').currentTime > 0.5")
    state = _audio_state(page)
    assert state["error"] == 0
    assert 3 < state["duration"] < 20, state
    download = page.locator("#speech-download")
    with page.expect_download() as download_info:
        download.click()
    assert download_info.value.suggested_filename == "speech.mp3"
    mp3 = _saved(download_info.value)
    assert mp3[0] == 0xFF
    assert mp3[1] & 0xE0 == 0xE0  # an MPEG audio frame header
    playground.screenshot("speech")

    # pcm has no header: the page wraps it to play it, and offers the raw samples for download.
    page.locator("#speech-format").select_option("pcm")
    page.locator("#speech-speed").fill("2")
    page.get_by_test_id("speech-input").fill("Twice as fast.")
    page.get_by_test_id("speech-submit").click()
    expect(status).to_contain_text("Done", timeout=LONG_WAIT_MS)
    page.wait_for_function("() => document.querySelector('[data-testid=speech-audio]').duration > 0")
    state = _audio_state(page)
    assert state["error"] == 0
    with page.expect_download() as download_info:
        download.click()
    pcm = _saved(download_info.value)
    assert abs(len(pcm) / 2 / 24_000 - state["duration"]) < 0.05  # the same samples, at the server's 24 kHz
    assert 0.3 < state["duration"] < 3


def test_live_microphone_shows_confirmed_and_tentative_text(open_playground) -> None:
    playground: Playground = open_playground(hash="#live")
    page = playground.page
    sockets: list[WebSocket] = []
    frame_sizes: list[int] = []

    def on_socket(socket: WebSocket) -> None:
        sockets.append(socket)
        socket.on("framesent", lambda payload: frame_sizes.append(len(payload)) if isinstance(payload, bytes) else None)

    page.on("websocket", on_socket)
    page.evaluate(
        """() => {
            window.tentativeSeen = false;
            const tentative = document.querySelector('[data-testid=live-tentative]');
            new MutationObserver(() => { if (tentative.textContent.trim()) window.tentativeSeen = true; })
                .observe(tentative, {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.locator("#live-model").fill(TINY_EN)
    page.locator("#live-language").fill("en")
    page.get_by_test_id("live-start").click()
    expect(page.locator("#live-status")).to_contain_text("Listening", timeout=LONG_WAIT_MS)
    confirmed = page.get_by_test_id("live-confirmed")
    # Mid-sentence: confirmed words and the tentative tail after them, shown apart.
    page.wait_for_function(
        "() => document.querySelector('[data-testid=live-confirmed]').textContent.trim()"
        " && document.querySelector('[data-testid=live-tentative]').textContent.trim()",
        timeout=LONG_WAIT_MS,
    )
    playground.screenshot("live")
    # The fake microphone plays jfk once, then 20 s of silence: stop once its last words are confirmed.
    expect(confirmed).to_contain_text("for your country", timeout=LONG_WAIT_MS)
    page.get_by_test_id("live-stop").click()
    expect(page.locator("#live-status")).to_contain_text("Finished", timeout=LONG_WAIT_MS)
    final = page.get_by_test_id("live-transcript").inner_text()
    assert word_error_rate(JFK_TEXT, final) < 0.2, final
    assert page.get_by_test_id("live-tentative").inner_text() == ""
    assert page.evaluate("window.tentativeSeen"), "tentative words were never shown apart from the confirmed ones"
    assert sockets
    assert f"api_key={API_KEY}" in sockets[0].url
    assert f"model={TINY_EN.replace('/', '%2F')}" in sockets[0].url
    # 100 ms of 16 kHz 16-bit mono per frame, as the worklet cuts them.
    assert len(frame_sizes) > 100
    assert set(frame_sizes) == {3200}, set(frame_sizes)

    # Live translation asks the socket for task=translate.
    page.locator("#live-translate").check()
    page.locator("#live-model").fill("Systran/faster-whisper-base")
    page.locator("#live-language").fill("")
    page.get_by_test_id("live-start").click()
    expect(page.locator("#live-status")).to_contain_text("Listening", timeout=LONG_WAIT_MS)
    assert "task=translate" in sockets[-1].url
    page.get_by_test_id("live-stop").click()
    expect(page.get_by_test_id("live-start")).to_be_enabled(timeout=LONG_WAIT_MS)


def test_models_panel_lists_loads_and_unloads(open_playground, ui_server) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    # Start from a known state: tiny.en not in memory (earlier tests may have loaded it).
    httpx.delete(f"{ui_server.url}/api/ps/{TINY_EN}", headers=headers, timeout=60)
    playground: Playground = open_playground(hash="#models")
    page = playground.page
    loaded = page.get_by_test_id("models-list")
    registry = page.get_by_test_id("registry-list")
    expect(registry.locator("li", has_text="en_US-joe-medium")).to_contain_text("bundled")
    expect(page.locator("#registry-errors")).to_contain_text("HF_HUB_OFFLINE")  # offline: only what is here
    expect(loaded.locator(f"li[data-model-id='{TINY_EN}']")).to_have_count(0)

    registry.get_by_role("button", name=f"Load {TINY_EN}", exact=True).click()
    entry = loaded.locator(f"li[data-model-id='{TINY_EN}']")
    expect(entry).to_contain_text("loaded", timeout=LONG_WAIT_MS)
    expect(entry).to_contain_text("stays loaded")  # STT_MODEL_TTL=-1 on this server
    expect(page.locator("#models-status")).to_have_text(f"Loaded {TINY_EN}.")
    ps = httpx.get(f"{ui_server.url}/api/ps", headers=headers).json()
    assert TINY_EN in [model["id"] for model in ps["models"]]

    page.locator("#registry-filter").fill("joe")
    expect(registry.locator("li")).to_have_count(1)
    playground.screenshot("models")

    entry.get_by_role("button", name=f"Unload {TINY_EN}").click()
    expect(entry).to_have_count(0)
    expect(page.locator("#models-status")).to_have_text(f"Unloaded {TINY_EN}.")

    # Loading by id, twice: the second is refused with the server's own words (the browser logs the 409).
    playground.watch.allow_error(r"status of 409 \(Conflict\)")
    page.locator("#models-load-id").fill(TINY_EN)
    page.locator("#models-load").click()
    expect(entry).to_have_count(1, timeout=LONG_WAIT_MS)
    page.locator("#models-load").click()
    expect(page.locator("#models-status")).to_contain_text("already loaded")


def test_keyboard_labels_and_a_phone_sized_screen(open_playground) -> None:
    playground: Playground = open_playground(viewport={"width": 390, "height": 844})
    page = playground.page
    expect(page.get_by_test_id("speech-voice").locator("option")).not_to_have_count(0)
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, meter')]
            .filter((control) => !(control.labels?.length || control.getAttribute('aria-label')
                || control.getAttribute('aria-labelledby') || control.textContent.trim()))
            .map((control) => control.outerHTML)"""
    )
    assert unlabelled == []

    # The tabs follow the WAI-ARIA pattern: arrows move between them, and the panel follows.
    page.get_by_role("tab", name="Transcribe").focus()
    for tab in ("Speak", "Live", "Models"):
        page.keyboard.press("ArrowRight")
        expect(page.get_by_role("tab", name=tab)).to_be_focused()
        expect(page.get_by_role("tabpanel")).to_have_accessible_name(tab)
    page.keyboard.press("Home")
    expect(page.get_by_role("tabpanel")).to_have_accessible_name("Transcribe")

    # Keyboard alone: Tab into the speech form and submit it with Enter on the button.
    page.keyboard.press("ArrowRight")
    page.get_by_test_id("speech-input").focus()
    page.get_by_test_id("speech-input").fill("Typed and sent with the keyboard.")
    page.get_by_test_id("speech-submit").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#speech-status")).to_contain_text("Done", timeout=LONG_WAIT_MS)

    for tab in ("Transcribe", "Speak", "Live", "Models"):
        playground.open(tab)
        time.sleep(0.2)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the {tab} panel is wider than a phone screen by {overflow} px"
        if tab == "Speak":
            playground.screenshot("phone")


def test_resampler_turns_any_rate_into_clean_16_khz(open_playground) -> None:
    """The AudioWorklet alone, in an OfflineAudioContext: tones in the speech band pass at their level and
    frequency; one just above the new Nyquist frequency (which would alias to 7 kHz) is filtered out."""
    page = open_playground().page
    for input_rate in (48_000, 44_100):
        for frequency, amplitude in ((440, 0.5), (6000, 0.5), (9000, 0.5)):
            samples = (
                np.array(
                    page.evaluate(
                        """async ([rate, frequency, amplitude]) => {
                        const context = new OfflineAudioContext(1, rate, rate);  // one second
                        await context.audioWorklet.addModule('/ui/pcm-worklet.js');
                        const node = new AudioWorkletNode(context, 'pcm-16k', {numberOfOutputs: 0});
                        const out = [];
                        node.port.onmessage = (event) => out.push(...new Int16Array(event.data.pcm));
                        const tone = new OscillatorNode(context, {frequency});
                        const gain = new GainNode(context, {gain: amplitude});
                        tone.connect(gain).connect(node);
                        tone.start();
                        await context.startRendering();
                        await new Promise((resolve) => setTimeout(resolve, 200));  // the last messages
                        return out;
                    }""",
                        [input_rate, frequency, amplitude],
                    ),
                    dtype=np.float64,
                )
                / 32768
            )
            assert 14_400 <= len(samples) <= 16_000, len(samples)  # whole 100 ms frames of one second
            steady = samples[800:]
            rms = float(np.sqrt(np.mean(steady**2)))
            if frequency < 8000:
                assert abs(rms - amplitude / np.sqrt(2)) < 0.01, (input_rate, rms)
                spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
                peak_hz = np.argmax(spectrum) * 16_000 / len(steady)
                assert abs(peak_hz - frequency) < 3, peak_hz
            else:
                assert rms < amplitude / np.sqrt(2) * 0.003, (input_rate, rms)  # at least 50 dB down: no alias
