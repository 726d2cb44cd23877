// Calling the speaches API from the page: the key on every call, errors in words, server-sent events.

const KEY_STORAGE = "speaches.apiKey";

export function apiKey() {
  return (localStorage.getItem(KEY_STORAGE) ?? "").trim();
}

export function setApiKey(key) {
  if (key.trim()) localStorage.setItem(KEY_STORAGE, key.trim());
  else localStorage.removeItem(KEY_STORAGE);
  window.dispatchEvent(new CustomEvent("speaches:key-changed"));
}

/** An error a person can act on: the server's own message (OpenAI's error shape) or what went wrong. */
export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** What to say when the server refuses a call for want of the right key. */
export function refusedMessage() {
  return apiKey()
    ? "The server refused the call: the API key entered is not the right one. Check it in the API key field at the top."
    : "The server refused the call: it needs an API key. Enter the server's API_KEY in the API key field at the top.";
}

function refused() {
  const error = new ApiError(refusedMessage(), 401);
  window.dispatchEvent(new CustomEvent("speaches:refused", { detail: error.message }));
  return error;
}

function authorization() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/**
 * fetch() against this server with the key; resolves to the response when it is a success, else throws an
 * ApiError carrying the server's message. `json` sends a JSON body, `body` anything else (a FormData).
 */
export async function apiFetch(path, { method = "GET", json, body, signal } = {}) {
  const headers = { ...authorization() };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`Could not reach the server: ${error.message}`);
  }
  if (response.status === 401) throw refused();
  if (!response.ok) throw new ApiError(await errorMessage(response), response.status);
  window.dispatchEvent(new CustomEvent("speaches:accepted"));
  return response;
}

export async function apiJson(path, options) {
  return (await apiFetch(path, options)).json();
}

async function errorMessage(response) {
  const text = await response.text().catch(() => "");
  try {
    const message = JSON.parse(text)?.error?.message;
    if (message) return message;
  } catch {
    // not JSON: fall through to the status line
  }
  return `The server answered ${response.status} ${response.statusText}${text ? `: ${text.slice(0, 200)}` : "."}`;
}

/** The ws:// (or wss://) URL of a path on this server, with the query and the key (browsers cannot set headers). */
export function webSocketUrl(path, params) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  if (apiKey()) url.searchParams.set("api_key", apiKey());
  return url.href;
}

/** A WebSocket that closed before it opened: find out whether the key was the reason. */
export async function explainFailedHandshake() {
  try {
    await apiFetch("/v1/models");
  } catch (error) {
    if (error.status === 401) return error.message;
  }
  return "Could not open the WebSocket to the server.";
}

/** The `data:` payloads of a server-sent events response, parsed as JSON, as they arrive. */
export async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Offer a blob as a file download. */
export function saveBlob(blob, fileName) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = fileName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Show a message in a status line; `error` styles it as a problem. */
export function showStatus(element, message, { error = false } = {}) {
  element.textContent = message;
  element.classList.toggle("error", error);
}

export function describeError(error) {
  if (error instanceof ApiError) return error.message;
  return `Something went wrong in the page: ${error?.message ?? error}`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
}
