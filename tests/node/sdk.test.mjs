// The official `openai` Node SDK against a real speaches server.
//
// Run by tests/node/test_node_sdk.py, which starts the server and passes SPEACHES_BASE_URL and
// SPEACHES_AUDIO_DIR. By hand: `SPEACHES_BASE_URL=http://127.0.0.1:8000/v1 node --test sdk.test.mjs`.
// Transcripts are compared by word error rate after normalising case and punctuation, never
// character for character; speech is checked by transcribing it back.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import OpenAI, { toFile } from "openai";

const here = path.dirname(fileURLToPath(import.meta.url));
const baseURL = process.env.SPEACHES_BASE_URL ?? "http://127.0.0.1:8000/v1";
const audioDir = process.env.SPEACHES_AUDIO_DIR ?? path.join(here, "..", "data");

const TINY_EN = "Systran/faster-whisper-tiny.en";
const BASE = "Systran/faster-whisper-base";
const VOICE = "en_US-joe-medium";
const JFK_TEXT =
  "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
const SPOKEN = "The weather is lovely today, so we will walk to the park after lunch.";

const client = new OpenAI({ baseURL, apiKey: "not-needed", maxRetries: 0, timeout: 300_000 });

function words(text) {
  return text
    .normalize("NFKC")
    .toLowerCase()
    .replace(/[\p{P}]/gu, " ")
    .split(/\s+/)
    .filter(Boolean);
}

/** Word error rate: word-level edit distance over the reference's length. */
function wordErrorRate(reference, hypothesis) {
  const ref = words(reference);
  const hyp = words(hypothesis);
  let previous = Array.from({ length: hyp.length + 1 }, (_, index) => index);
  for (let i = 1; i <= ref.length; i++) {
    const current = [i];
    for (let j = 1; j <= hyp.length; j++) {
      const substitution = previous[j - 1] + (ref[i - 1] === hyp[j - 1] ? 0 : 1);
      current.push(Math.min(substitution, previous[j] + 1, current[j - 1] + 1));
    }
    previous = current;
  }
  return previous[hyp.length] / ref.length;
}

async function audioFile(name) {
  return toFile(await readFile(path.join(audioDir, name)), name);
}

async function jfk(params) {
  return client.audio.transcriptions.create({ file: await audioFile("jfk.flac"), model: TINY_EN, ...params });
}

test("models.list lists the bundled models and voice", async () => {
  const ids = [];
  for await (const model of client.models.list()) {
    assert.equal(model.object, "model");
    ids.push(model.id);
  }
  for (const expected of [TINY_EN, BASE, VOICE]) {
    assert.ok(ids.includes(expected), `${expected} missing from ${ids}`);
  }
  const one = await client.models.retrieve(TINY_EN);
  assert.equal(one.id, TINY_EN);
});

test("transcription: json", async () => {
  const result = await jfk({ response_format: "json" });
  assert.ok(wordErrorRate(JFK_TEXT, result.text) < 0.1, result.text);
});

test("transcription: text", async () => {
  const result = await jfk({ response_format: "text" });
  assert.equal(typeof result, "string");
  assert.ok(wordErrorRate(JFK_TEXT, result) < 0.1, result);
});

test("transcription: srt", async () => {
  const result = await jfk({ response_format: "srt" });
  assert.match(result, /^1\r?\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\r?\n/);
  const spoken = result
    .split(/\r?\n/)
    .filter((line) => line && !/^\d+$/.test(line) && !line.includes("-->"))
    .join(" ");
  assert.ok(wordErrorRate(JFK_TEXT, spoken) < 0.1, spoken);
});

test("transcription: vtt", async () => {
  const result = await jfk({ response_format: "vtt" });
  assert.match(result, /^WEBVTT\r?\n/);
  assert.match(result, /\d\d:\d\d(:\d\d)?\.\d{3} --> \d\d:\d\d(:\d\d)?\.\d{3}/);
});

test("transcription: verbose_json with word and segment timestamps", async () => {
  const result = await jfk({ response_format: "verbose_json", timestamp_granularities: ["word", "segment"] });
  assert.equal(result.language, "english");
  assert.ok(Math.abs(result.duration - 11) < 0.5, `duration ${result.duration}`);
  assert.ok(result.segments.length >= 1);
  assert.ok(result.words.length >= 20, `${result.words.length} words`);
  let previousEnd = 0;
  for (const word of result.words) {
    assert.ok(word.start >= previousEnd - 0.01 && word.end >= word.start, JSON.stringify(word));
    previousEnd = word.end;
  }
  assert.ok(wordErrorRate(JFK_TEXT, result.words.map((word) => word.word).join(" ")) < 0.1);
});

test("transcription: streamed deltas add up to the final text", async () => {
  const stream = await jfk({ stream: true });
  let deltas = "";
  let done = null;
  for await (const event of stream) {
    if (event.type === "transcript.text.delta") deltas += event.delta;
    if (event.type === "transcript.text.done") done = event.text;
  }
  assert.ok(done !== null, "no transcript.text.done event");
  assert.equal(deltas, done);
  assert.ok(wordErrorRate(JFK_TEXT, done) < 0.1, done);
});

test("translation: French speech to English text", async () => {
  const result = await client.audio.translations.create({
    file: await audioFile("whats_your_name_french.wav"),
    model: BASE,
  });
  assert.ok(wordErrorRate("How do you call yourself?", result.text) < 0.5, result.text);
});

const MAGIC = {
  mp3: (bytes) => bytes.subarray(0, 3).toString("latin1") === "ID3" || (bytes[0] === 0xff && (bytes[1] & 0xe0) === 0xe0),
  opus: (bytes) => bytes.subarray(0, 4).toString("latin1") === "OggS",
  aac: (bytes) => bytes[0] === 0xff && (bytes[1] & 0xf6) === 0xf0,
  flac: (bytes) => bytes.subarray(0, 4).toString("latin1") === "fLaC",
  wav: (bytes) => bytes.subarray(0, 4).toString("latin1") === "RIFF" && bytes.subarray(8, 12).toString("latin1") === "WAVE",
};

test("speech: every container format starts as its format should", async () => {
  for (const [format, looksRight] of Object.entries(MAGIC)) {
    const response = await client.audio.speech.create({ model: "tts-1", voice: "alloy", input: SPOKEN, response_format: format });
    const bytes = Buffer.from(await response.arrayBuffer());
    assert.ok(bytes.length > 4000, `${format}: only ${bytes.length} bytes`);
    assert.ok(looksRight(bytes), `${format} starts with ${bytes.subarray(0, 12).toString("hex")}`);
  }
});

test("speech: wav speaks the text (transcribed back)", async () => {
  const response = await client.audio.speech.create({ model: "tts-1", voice: VOICE, input: SPOKEN, response_format: "wav" });
  const wav = Buffer.from(await response.arrayBuffer());
  const sampleRate = wav.readUInt32LE(24);
  assert.equal(sampleRate, 22050);
  const heard = await client.audio.transcriptions.create({ file: await toFile(wav, "speech.wav"), model: TINY_EN });
  assert.ok(wordErrorRate(SPOKEN, heard.text) < 0.3, heard.text);
});

test("speech: pcm is 24 kHz 16-bit mono of the right length", async () => {
  const response = await client.audio.speech.create({ model: "tts-1", voice: "alloy", input: SPOKEN, response_format: "pcm" });
  const pcm = Buffer.from(await response.arrayBuffer());
  const seconds = pcm.length / 2 / 24000;
  assert.ok(seconds > 2 && seconds < 8, `${seconds} s`);
});

test("speech: streamed as server-sent events", async () => {
  const response = await client.audio.speech.create({
    model: "tts-1",
    voice: "alloy",
    input: SPOKEN,
    response_format: "pcm",
    stream_format: "sse",
  });
  const events = (await response.text())
    .split(/\r?\n\r?\n/)
    .map((block) => block.split(/\r?\n/).find((line) => line.startsWith("data: ")))
    .filter(Boolean)
    .map((line) => JSON.parse(line.slice("data: ".length)));
  const deltas = events.filter((event) => event.type === "speech.audio.delta");
  assert.ok(deltas.length >= 1);
  assert.equal(events.at(-1).type, "speech.audio.done");
  const bytes = deltas.reduce((total, event) => total + Buffer.from(event.audio, "base64").length, 0);
  assert.ok(bytes > 2 * 24000 * 2, `${bytes} bytes of pcm`);
});

test("errors arrive as the SDK's typed errors in OpenAI's shape", async () => {
  await assert.rejects(
    client.audio.transcriptions.create({ file: await audioFile("jfk.flac"), model: "Systran/no-such-model" }),
    (error) => {
      assert.ok(error instanceof OpenAI.NotFoundError, String(error));
      assert.equal(error.status, 404);
      assert.equal(error.code, "model_not_found");
      assert.equal(error.param, "model");
      return true;
    },
  );
  await assert.rejects(
    client.audio.speech.create({ model: "tts-1", voice: "alloy", input: "" }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.param, "input");
      return true;
    },
  );
});
