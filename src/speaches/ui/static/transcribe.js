// The Transcribe panel: a file or an in-page recording to POST /v1/audio/transcriptions (or /translations).

import { ApiError, apiFetch, describeError, saveBlob, serverSentEvents, showStatus } from "./api.js";

const $ = (id) => document.getElementById(id);

const FORMATS = ["json", "text", "srt", "vtt", "verbose_json"];
const EXTENSIONS = { json: "json", text: "txt", srt: "srt", vtt: "vtt", verbose_json: "verbose.json" };
const MEDIA_TYPES = {
  json: "application/json",
  text: "text/plain",
  srt: "application/x-subrip",
  vtt: "text/vtt",
  verbose_json: "application/json",
};
// What MediaRecorder may produce, best first; the server decodes any of them.
const RECORDING_TYPES = [
  ["audio/webm;codecs=opus", "webm"],
  ["audio/ogg;codecs=opus", "ogg"],
  ["audio/mp4", "m4a"],
];

/** The request a transcript came from, kept so that it can be fetched again in another format. */
class TranscriptionRequest {
  constructor({ audio, fileName, task, model, language, granularities }) {
    Object.assign(this, { audio, fileName, task, model, language, granularities });
    this.results = new Map(); // format -> the response body
  }

  get path() {
    return this.task === "translate" ? "/v1/audio/translations" : "/v1/audio/transcriptions";
  }

  form(format, stream) {
    const form = new FormData();
    form.append("file", this.audio, this.fileName);
    form.append("model", this.model || "whisper-1");
    form.append("response_format", format);
    if (this.task === "transcribe" && this.language) form.append("language", this.language);
    // Timestamps only mean something in verbose_json (and words only fit there).
    if (format === "verbose_json" && this.task === "transcribe") {
      for (const granularity of this.granularities) form.append("timestamp_granularities[]", granularity);
    }
    if (stream) form.append("stream", "true");
    return form;
  }

  async fetch(format, signal) {
    if (!this.results.has(format)) {
      const response = await apiFetch(this.path, { method: "POST", body: this.form(format, false), signal });
      this.results.set(format, await response.text());
    }
    return this.results.get(format);
  }

  baseName() {
    return this.fileName.replace(/\.[^.]*$/, "") || "transcript";
  }
}

function formatTime(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(2).padStart(5, "0")}`;
}

/** verbose_json's segments and words as readable lines. */
function describeTimestamps(verbose) {
  const lines = [];
  for (const segment of verbose.segments ?? []) {
    lines.push(`[${formatTime(segment.start)} → ${formatTime(segment.end)}] ${segment.text.trim()}`);
  }
  if (verbose.words?.length) {
    if (lines.length) lines.push("");
    lines.push(verbose.words.map((word) => `${word.word.trim()} (${word.start.toFixed(2)}–${word.end.toFixed(2)})`).join("  "));
  }
  return lines.join("\n");
}

export function setUpTranscribe() {
  const form = $("transcribe-form");
  const fileInput = $("transcribe-file");
  const recordButton = $("transcribe-record");
  const recordingPlayer = $("transcribe-recording");
  const sourceLabel = $("transcribe-source");
  const task = $("transcribe-task");
  const language = $("transcribe-language");
  const format = $("transcribe-format");
  const wordTimestamps = $("transcribe-ts-word");
  const segmentTimestamps = $("transcribe-ts-segment");
  const stream = $("transcribe-stream");
  const submit = $("transcribe-submit");
  const cancel = $("transcribe-cancel");
  const status = $("transcribe-status");
  const transcript = $("transcript");
  const details = $("transcribe-details");
  const responseView = $("transcribe-response");
  const downloads = $("transcribe-downloads");
  const downloadButtons = $("transcribe-download-buttons");

  let audio = null; // { blob, fileName }
  let recorder = null;
  let recordingUrl = null;
  let running = null; // the AbortController of the request in flight
  let lastRequest = null;

  const syncOptions = () => {
    const translating = task.value === "translate";
    language.disabled = translating;
    submit.textContent = translating ? "Translate" : "Transcribe";
    const verbose = format.value === "verbose_json";
    wordTimestamps.disabled = !verbose || translating;
    segmentTimestamps.disabled = !verbose;
    if (!verbose) wordTimestamps.checked = false;
  };
  task.addEventListener("change", syncOptions);
  format.addEventListener("change", syncOptions);
  syncOptions();

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (!file) return;
    audio = { blob: file, fileName: file.name };
    recordingPlayer.hidden = true;
    sourceLabel.textContent = `${file.name} (${Math.round(file.size / 1024)} KB)`;
  });

  recordButton.addEventListener("click", async () => {
    if (recorder) {
      recorder.stop();
      return;
    }
    if (!navigator.mediaDevices?.getUserMedia) {
      showStatus(status, "The microphone needs a secure page: open the playground at https:// or on localhost.", { error: true });
      return;
    }
    let microphone;
    try {
      microphone = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      showStatus(status, `The microphone is not available: ${error.message}`, { error: true });
      return;
    }
    const [mimeType, extension] = RECORDING_TYPES.find(([type]) => MediaRecorder.isTypeSupported(type)) ?? ["", "webm"];
    recorder = new MediaRecorder(microphone, mimeType ? { mimeType } : {});
    const chunks = [];
    recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
    recorder.addEventListener("stop", () => {
      for (const track of microphone.getTracks()) track.stop();
      const blob = new Blob(chunks, { type: recorder.mimeType });
      recorder = null;
      audio = { blob, fileName: `recording.${extension}` };
      fileInput.value = "";
      if (recordingUrl) URL.revokeObjectURL(recordingUrl);
      recordingUrl = URL.createObjectURL(blob);
      recordingPlayer.src = recordingUrl;
      recordingPlayer.hidden = false;
      recordButton.textContent = "Record from the microphone";
      recordButton.setAttribute("aria-pressed", "false");
      sourceLabel.textContent = `A recording (${Math.round(blob.size / 1024)} KB)`;
    });
    recorder.start();
    recordButton.textContent = "Stop recording";
    recordButton.setAttribute("aria-pressed", "true");
    sourceLabel.textContent = "Recording…";
  });

  const granularities = () => [segmentTimestamps, wordTimestamps].filter((box) => box.checked && !box.disabled).map((box) => box.value);

  const showResult = (body, responseFormat) => {
    if (responseFormat === "json" || responseFormat === "verbose_json") {
      const parsed = JSON.parse(body);
      transcript.textContent = parsed.text;
      const timestamps = responseFormat === "verbose_json" ? describeTimestamps(parsed) : "";
      responseView.textContent = (timestamps ? `${timestamps}\n\n` : "") + JSON.stringify(parsed, null, 2);
      details.hidden = false;
      details.open = responseFormat === "verbose_json";
    } else {
      transcript.textContent = body;
    }
  };

  const showDownloads = (request) => {
    downloadButtons.replaceChildren(
      ...FORMATS.map((responseFormat) => {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = EXTENSIONS[responseFormat];
        button.dataset.format = responseFormat;
        button.setAttribute("aria-label", `Download as ${responseFormat}`);
        button.addEventListener("click", async () => {
          button.disabled = true;
          const fetched = request.results.has(responseFormat);
          if (!fetched) showStatus(status, `Fetching the transcript as ${responseFormat}…`);
          try {
            const body = await request.fetch(responseFormat);
            saveBlob(new Blob([body], { type: MEDIA_TYPES[responseFormat] }), `${request.baseName()}.${EXTENSIONS[responseFormat]}`);
            if (!fetched) showStatus(status, `Saved as ${responseFormat}.`);
          } catch (error) {
            showStatus(status, describeError(error), { error: true });
          } finally {
            button.disabled = false;
          }
        });
        return button;
      }),
    );
    downloads.hidden = false;
  };

  const run = async () => {
    if (!audio) {
      showStatus(status, "Choose an audio file or make a recording first.", { error: true });
      fileInput.focus();
      return;
    }
    const request = new TranscriptionRequest({
      audio: audio.blob,
      fileName: audio.fileName,
      task: task.value,
      model: $("transcribe-model").value.trim(),
      language: language.value.trim(),
      granularities: granularities(),
    });
    running = new AbortController();
    submit.disabled = true;
    cancel.hidden = false;
    transcript.textContent = "";
    details.hidden = true;
    downloads.hidden = true;
    const started = performance.now();
    const elapsed = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
    try {
      if (stream.checked) {
        showStatus(status, "Uploading; the text appears as it is decoded…");
        const response = await apiFetch(request.path, { method: "POST", body: request.form(format.value, true), signal: running.signal });
        for await (const event of serverSentEvents(response)) {
          if (event.type === "transcript.text.delta") {
            transcript.textContent += event.delta;
            showStatus(status, `Receiving… (${elapsed()})`);
          } else if (event.type === "transcript.text.done") {
            transcript.textContent = event.text;
          } else if (event.error) {
            throw new ApiError(event.error.message);
          }
        }
      } else {
        showStatus(status, "Uploading and transcribing…");
        showResult(await request.fetch(format.value, running.signal), format.value);
      }
      lastRequest = request;
      showStatus(status, `Done in ${elapsed()}.`);
      showDownloads(lastRequest);
    } catch (error) {
      if (error.name === "AbortError") showStatus(status, "Cancelled.");
      else showStatus(status, describeError(error), { error: true });
    } finally {
      running = null;
      submit.disabled = false;
      cancel.hidden = true;
    }
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!running) run();
  });
  cancel.addEventListener("click", () => running?.abort());
  return {};
}
