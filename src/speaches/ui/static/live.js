// The Live panel: the microphone, through an AudioWorklet (16 kHz s16le), over WS /v1/audio/transcriptions.

import { describeError, explainFailedHandshake, showStatus, webSocketUrl } from "./api.js";

const $ = (id) => document.getElementById(id);

const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz: 3200-byte frames, the size docs/usage/live.md suggests
const MAX_BUFFERED_BYTES = 2 * 1024 * 1024; // a stalled socket: stop rather than hold minutes of audio

const CLOSE_MEANINGS = {
  1001: "The server ended the session after a long silence.",
  1008: "The server refused the session.",
  1009: "The server refused a frame as too large.",
  1011: "The transcription failed on the server.",
  1013: "The server is busy; try again shortly.",
};

export function setUpLive() {
  const model = $("live-model");
  const language = $("live-language");
  const translate = $("live-translate");
  const start = $("live-start");
  const stop = $("live-stop");
  const level = $("live-level");
  const status = $("live-status");
  const confirmed = $("live-confirmed");
  const tentative = $("live-tentative");

  let session = null;

  const setRunning = (running) => {
    start.disabled = running;
    stop.disabled = !running;
    for (const field of [model, language, translate]) field.disabled = running;
  };

  const stopMicrophone = async (current) => {
    if (current.microphoneStopped) return;
    current.microphoneStopped = true;
    current.microphone?.getTracks().forEach((track) => track.stop());
    current.source?.disconnect();
    current.worklet?.disconnect();
    if (current.context && current.context.state !== "closed") await current.context.close();
    level.value = 0;
  };

  const onMessage = (current, raw) => {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (message.type === "transcript.text.delta") {
      // Each update carries only the newly confirmed text; the transcript is their concatenation.
      confirmed.textContent += message.delta;
      tentative.textContent = message.unconfirmed;
    } else if (message.type === "transcript.text.done") {
      confirmed.textContent = message.text;
      tentative.textContent = "";
      current.done = true;
    } else if (message.type === "error") {
      current.error = message.error.message;
      showStatus(status, message.error.message, { error: true });
    }
  };

  const onClose = async (current, event) => {
    await stopMicrophone(current);
    setRunning(false);
    session = null;
    if (!current.opened) {
      showStatus(status, await explainFailedHandshake(), { error: true });
    } else if (event.code === 1000 && current.done) {
      showStatus(status, "Finished: the transcript above is final.");
    } else if (current.error) {
      showStatus(status, `${current.error} (closed with ${event.code})`, { error: true });
    } else {
      const meaning = CLOSE_MEANINGS[event.code] ?? "The connection closed.";
      showStatus(status, `${meaning}${event.reason ? ` ${event.reason}` : ""} (code ${event.code})`, { error: event.code !== 1000 });
    }
  };

  // Stopped while it was starting (each await is a chance): undo what was set up so far.
  const abandoned = async (current) => {
    if (!current.microphoneStopped) return false;
    current.microphoneStopped = false;
    await stopMicrophone(current);
    return true;
  };

  const startMicrophone = async (current) => {
    current.microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
    if (await abandoned(current)) return;
    current.context = new AudioContext({ latencyHint: "interactive" });
    await current.context.audioWorklet.addModule("/ui/pcm-worklet.js");
    if (await abandoned(current)) return;
    current.source = current.context.createMediaStreamSource(current.microphone);
    current.worklet = new AudioWorkletNode(current.context, "pcm-16k", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { targetRate: 16000, frameSamples: FRAME_SAMPLES },
    });
    current.worklet.port.onmessage = (event) => {
      level.value = Math.min(1, event.data.level * 4);
      if (current.socket.readyState !== WebSocket.OPEN || current.ending) return;
      if (current.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        showStatus(status, "The connection cannot keep up with the microphone; stopping.", { error: true });
        end(current);
        return;
      }
      current.socket.send(event.data.pcm);
    };
    current.source.connect(current.worklet);
    if (current.context.state === "suspended") await current.context.resume();
  };

  const begin = async () => {
    if (session) return;
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
      showStatus(status, "The microphone needs a secure page: open the playground at https:// or on localhost.", { error: true });
      return;
    }
    confirmed.textContent = "";
    tentative.textContent = "";
    setRunning(true);
    showStatus(status, "Connecting…");
    const current = { opened: false, done: false, ending: false, error: null };
    session = current;
    const url = webSocketUrl("/v1/audio/transcriptions", {
      model: model.value.trim(),
      language: language.value.trim(),
      response_format: "json",
      task: translate.checked ? "translate" : "",
    });
    current.socket = new WebSocket(url);
    current.socket.binaryType = "arraybuffer";
    current.socket.addEventListener("message", (event) => onMessage(current, event.data));
    current.socket.addEventListener("close", (event) => onClose(current, event));
    current.socket.addEventListener("open", async () => {
      current.opened = true;
      try {
        await startMicrophone(current);
        if (!current.ending) showStatus(status, "Listening… speak now.");
      } catch (error) {
        showStatus(status, `The microphone is not available: ${error.message ?? describeError(error)}`, { error: true });
        current.socket.close(1000, "no microphone");
      }
    });
  };

  /** Stop the microphone and tell the server the audio is over; it answers with the final transcript. */
  const end = async (current) => {
    if (current.ending) return;
    current.ending = true;
    stop.disabled = true;
    showStatus(status, "Finishing the transcript…");
    await stopMicrophone(current);
    if (current.socket.readyState === WebSocket.OPEN) current.socket.send(JSON.stringify({ type: "end" }));
  };

  start.addEventListener("click", begin);
  stop.addEventListener("click", () => session && end(session));
  return {};
}
