// The Speak panel: POST /v1/audio/speech, played while it streams, and offered for download.
//
// Streaming playback uses Media Source Extensions: each piece of the response is appended to a SourceBuffer
// as it arrives, so the first sentence plays while the server still synthesizes the rest. Chromium's MSE
// takes mp3 (`audio/mpeg`) and ADTS AAC (`audio/aac`), the two formats the server streams as bare frames;
// Ogg Opus, FLAC and WAV are not MSE formats, so those play once the whole response is in. PCM has no
// header at all: it is wrapped in one (24 kHz mono 16-bit, the server's PCM default) to play it.

import { ApiError, apiFetch, apiJson, describeError, formatBytes, showStatus } from "./api.js";

const $ = (id) => document.getElementById(id);

const MEDIA_TYPES = {
  mp3: "audio/mpeg",
  opus: "audio/ogg",
  aac: "audio/aac",
  flac: "audio/flac",
  wav: "audio/wav",
  pcm: "audio/pcm",
};
const PCM_SAMPLE_RATE = 24000;

const streamsInThisBrowser = (format) =>
  (format === "mp3" || format === "aac") && "MediaSource" in window && MediaSource.isTypeSupported(MEDIA_TYPES[format]);

function appendTo(sourceBuffer, bytes) {
  return new Promise((resolve, reject) => {
    const done = () => {
      sourceBuffer.removeEventListener("error", failed);
      resolve();
    };
    const failed = () => {
      sourceBuffer.removeEventListener("updateend", done);
      reject(new ApiError("The browser could not decode the audio it received."));
    };
    sourceBuffer.addEventListener("updateend", done, { once: true });
    sourceBuffer.addEventListener("error", failed, { once: true });
    sourceBuffer.appendBuffer(bytes);
  });
}

/** 16-bit mono PCM with a WAV header in front, so that an audio element can play it. */
function wavFromPcm(chunks, sampleRate) {
  const dataBytes = chunks.reduce((total, chunk) => total + chunk.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => [...text].forEach((char, i) => header.setUint8(offset + i, char.charCodeAt(0)));
  ascii(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  ascii(36, "data");
  header.setUint32(40, dataBytes, true);
  return new Blob([header.buffer, ...chunks], { type: "audio/wav" });
}

export function setUpSpeech() {
  const form = $("speech-form");
  const input = $("speech-input");
  const voice = $("speech-voice");
  const speed = $("speech-speed");
  const speedValue = $("speech-speed-value");
  const format = $("speech-format");
  const formatHelp = $("speech-format-help");
  const submit = $("speech-submit");
  const cancel = $("speech-cancel");
  const status = $("speech-status");
  const player = $("speech-audio");
  const download = $("speech-download");

  let running = null;
  let objectUrls = [];
  let voicesLoaded = false;

  const releaseUrls = () => {
    for (const url of objectUrls) URL.revokeObjectURL(url);
    objectUrls = [];
  };
  const objectUrl = (source) => {
    const url = URL.createObjectURL(source);
    objectUrls.push(url);
    return url;
  };

  const showSpeed = () => {
    speedValue.textContent = `${Number(speed.value).toFixed(2)}×`;
  };
  speed.addEventListener("input", showSpeed);
  showSpeed();

  const describeFormat = () => {
    formatHelp.textContent = streamsInThisBrowser(format.value)
      ? "Plays while it streams."
      : "Plays once the whole response is in (this browser cannot stream it).";
  };
  format.addEventListener("change", describeFormat);
  describeFormat();

  const loadVoices = async () => {
    const previous = voice.value;
    try {
      const voices = (await apiJson("/v1/audio/voices")).data;
      voice.replaceChildren(
        ...voices.map((item) => {
          const option = document.createElement("option");
          option.value = item.id;
          option.dataset.model = item.model;
          option.textContent = `${item.id} (${item.language_name ?? item.language}, ${item.quality})`;
          return option;
        }),
      );
      const preferred = voices.find((item) => item.id === previous) ?? voices.find((item) => item.aliases.length) ?? voices[0];
      if (preferred) voice.value = preferred.id;
      voicesLoaded = true;
      if (status.classList.contains("error")) showStatus(status, "");
    } catch (error) {
      voicesLoaded = false;
      showStatus(status, `The voices could not be listed. ${describeError(error)}`, { error: true });
    }
  };

  /** Appends each piece to a MediaSource as it arrives; playback starts with the first one. */
  const playWhileStreaming = async (response, mediaType, onFirstAudio) => {
    const mediaSource = new MediaSource();
    player.src = objectUrl(mediaSource);
    await new Promise((resolve) => mediaSource.addEventListener("sourceopen", resolve, { once: true }));
    const sourceBuffer = mediaSource.addSourceBuffer(mediaType);
    const chunks = [];
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        chunks.push(value);
        await appendTo(sourceBuffer, value);
        if (chunks.length === 1) onFirstAudio();
      }
    } finally {
      if (mediaSource.readyState === "open") mediaSource.endOfStream();
    }
    return chunks;
  };

  const collect = async (response, onProgress) => {
    const chunks = [];
    let received = 0;
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      received += value.byteLength;
      onProgress(received);
    }
    return chunks;
  };

  const play = () =>
    player.play().catch((error) => {
      if (error.name !== "AbortError") showStatus(status, "Ready: press play to listen (the browser blocked autoplay).");
    });

  const speak = async () => {
    if (!input.value.trim()) {
      showStatus(status, "Type some text to speak first.", { error: true });
      input.focus();
      return;
    }
    if (!voicesLoaded) await loadVoices();
    const responseFormat = format.value;
    const selected = voice.selectedOptions[0];
    running = new AbortController();
    submit.disabled = true;
    cancel.hidden = false;
    download.hidden = true;
    player.pause();
    player.removeAttribute("src");
    player.load();
    releaseUrls();
    const started = performance.now();
    const seconds = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
    showStatus(status, "Synthesizing…");
    try {
      const response = await apiFetch("/v1/audio/speech", {
        method: "POST",
        json: {
          model: selected?.dataset.model ?? "tts-1",
          voice: selected?.value,
          input: input.value,
          speed: Number(speed.value),
          response_format: responseFormat,
        },
        signal: running.signal,
      });
      let chunks;
      if (streamsInThisBrowser(responseFormat)) {
        chunks = await playWhileStreaming(response, MEDIA_TYPES[responseFormat], () => {
          showStatus(status, `First audio after ${seconds()}; playing while the rest streams…`);
          play();
        });
      } else {
        chunks = await collect(response, (received) => showStatus(status, `Receiving… ${formatBytes(received)}`));
        player.src = objectUrl(responseFormat === "pcm" ? wavFromPcm(chunks, PCM_SAMPLE_RATE) : new Blob(chunks, { type: MEDIA_TYPES[responseFormat] }));
        play();
      }
      const file = new Blob(chunks, { type: MEDIA_TYPES[responseFormat] });
      download.href = objectUrl(file);
      download.download = `speech.${responseFormat}`;
      download.textContent = `Download speech.${responseFormat} (${formatBytes(file.size)})`;
      download.hidden = false;
      showStatus(status, `Done: ${formatBytes(file.size)} of ${responseFormat} in ${seconds()}.`);
    } catch (error) {
      if (error.name === "AbortError") showStatus(status, "Stopped.");
      else showStatus(status, describeError(error), { error: true });
    } finally {
      running = null;
      submit.disabled = false;
      cancel.hidden = true;
    }
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!running) speak();
  });
  cancel.addEventListener("click", () => {
    running?.abort();
    player.pause();
  });
  return { reload: loadVoices };
}
