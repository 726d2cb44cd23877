// The official `openai` Node SDK's Realtime client (OpenAIRealtimeWebSocket) against a real speaches server.
//
// Run by tests/realtime/test_realtime_node.py, which starts a server with API_KEY set and passes
// SPEACHES_BASE_URL, SPEACHES_API_KEY and SPEACHES_PCM (24 kHz PCM16 of the lamp clip). The SDK
// authenticates the way a browser must, with the `openai-insecure-api-key.<key>` subprotocol; Node 20
// needs `--experimental-websocket` for the WebSocket it uses. The SDK always builds a `wss://` URL and
// sets only `model`: `onURL` points it at the plain loopback server and adds `intent=transcription`.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import OpenAI from "openai";
import { OpenAIRealtimeWebSocket } from "openai/realtime/websocket";

const baseURL = process.env.SPEACHES_BASE_URL;
const apiKey = process.env.SPEACHES_API_KEY;
const TINY_EN = "Systran/faster-whisper-tiny.en";

function words(text) {
  return text.toLowerCase().replace(/[\p{P}]/gu, " ").split(/\s+/).filter(Boolean);
}

test("a transcription session: manual commit, deltas, then completed", async () => {
  const client = new OpenAI({ baseURL, apiKey });
  const realtime = new OpenAIRealtimeWebSocket(
    {
      model: TINY_EN,
      onURL: (url) => {
        url.protocol = "ws:";
        url.searchParams.set("intent", "transcription");
      },
    },
    client,
  );
  const events = [];
  const finished = new Promise((resolve, reject) => {
    realtime.on("event", (event) => {
      events.push(event);
      if (event.type === "conversation.item.done") resolve();
    });
    realtime.on("error", (error) => reject(error));
    setTimeout(() => reject(new Error(`no transcript in time: ${events.map((e) => e.type)}`)), 120_000);
  });
  await new Promise((resolve) => realtime.socket.addEventListener("open", resolve));
  assert.equal(realtime.socket.protocol, "realtime");
  realtime.send({ type: "session.update", session: { type: "transcription", audio: { input: { turn_detection: null } } } });
  const pcm = await readFile(process.env.SPEACHES_PCM);
  for (let offset = 0; offset < pcm.length; offset += 4800) {
    realtime.send({ type: "input_audio_buffer.append", audio: pcm.subarray(offset, offset + 4800).toString("base64") });
  }
  realtime.send({ type: "input_audio_buffer.commit" });
  await finished;
  realtime.close();
  const types = events.map((event) => event.type);
  assert.equal(types[0], "session.created");
  assert.ok(types.indexOf("input_audio_buffer.committed") < types.indexOf("conversation.item.input_audio_transcription.delta"));
  const completed = events.find((event) => event.type === "conversation.item.input_audio_transcription.completed");
  const deltas = events.filter((event) => event.type === "conversation.item.input_audio_transcription.delta");
  assert.equal(deltas.map((event) => event.delta).join(""), completed.transcript);
  assert.deepEqual(words(completed.transcript), ["turn", "on", "the", "living", "room", "lamp"]);
});
