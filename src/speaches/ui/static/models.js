// The Models panel: what is in memory (GET /api/ps), load and unload (POST/DELETE /api/ps/{id}), and what can
// be downloaded (GET /v1/registry, POST /v1/models/{id}) or removed from the cache (DELETE /v1/models/{id}).

import { apiFetch, apiJson, describeError, formatBytes, showStatus } from "./api.js";

const $ = (id) => document.getElementById(id);

// Model ids hold a slash (Systran/faster-whisper-base) that the routes take as part of the path.
const modelPath = (id) => id.split("/").map(encodeURIComponent).join("/");

function describeExpiry(model) {
  if (model.ref_count > 0) return `in use by ${model.ref_count}`;
  if (model.ttl_seconds < 0) return "stays loaded";
  if (model.expires_in_seconds === null) return "";
  const seconds = Math.round(model.expires_in_seconds);
  return seconds >= 120 ? `unloads in ${Math.round(seconds / 60)} min` : `unloads in ${seconds} s`;
}

function button(label, onClick, { accessibleName } = {}) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  if (accessibleName) element.setAttribute("aria-label", accessibleName);
  element.addEventListener("click", () => onClick(element));
  return element;
}

function listItem(id, meta, buttons) {
  const item = document.createElement("li");
  item.dataset.modelId = id;
  const text = document.createElement("div");
  const name = Object.assign(document.createElement("div"), { className: "model-id", textContent: id });
  const details = Object.assign(document.createElement("div"), { className: "meta", textContent: meta });
  text.append(name, details);
  const actions = Object.assign(document.createElement("div"), { className: "buttons" });
  actions.append(...buttons);
  item.append(text, actions);
  return item;
}

export function setUpModels() {
  const panel = $("panel-models");
  const loadedList = $("models-list");
  const empty = $("models-empty");
  const status = $("models-status");
  const registryList = $("registry-list");
  const registryErrors = $("registry-errors");
  const filter = $("registry-filter");
  const loadForm = $("models-load-form");
  const loadId = $("models-load-id");

  let registry = null;

  // One action at a time, each reported in the status line and followed by a fresh listing.
  const act = async (element, busyText, doneText, call) => {
    if (element) element.disabled = true;
    showStatus(status, busyText);
    try {
      await call();
      showStatus(status, doneText);
    } catch (error) {
      showStatus(status, describeError(error), { error: true });
    } finally {
      if (element) element.disabled = false;
      await refreshLoaded();
    }
  };

  const load = (id, element) =>
    act(element, `Loading ${id}…`, `Loaded ${id}.`, () => apiFetch(`/api/ps/${modelPath(id)}`, { method: "POST" }));
  const unload = (id, element) =>
    act(element, `Unloading ${id}…`, `Unloaded ${id}.`, () => apiFetch(`/api/ps/${modelPath(id)}`, { method: "DELETE" }));
  const download = (id, element) =>
    act(element, `Downloading ${id}; large models take a while…`, `Downloaded ${id}.`, async () => {
      await apiFetch(`/v1/models/${modelPath(id)}`, { method: "POST" });
      await refreshRegistry();
    });
  const remove = (id, element) => {
    // Two steps, so that one stray click or key press deletes nothing.
    if (element.dataset.armed !== "true") {
      element.dataset.armed = "true";
      element.textContent = "Really delete?";
      setTimeout(() => {
        element.dataset.armed = "false";
        element.textContent = "Delete";
      }, 5000);
      return;
    }
    act(element, `Deleting ${id} from the cache…`, `Deleted ${id}.`, async () => {
      await apiFetch(`/v1/models/${modelPath(id)}`, { method: "DELETE" });
      await refreshRegistry();
    });
  };

  const refreshLoaded = async () => {
    try {
      const { models } = await apiJson("/api/ps");
      loadedList.replaceChildren(
        ...models.map((model) => {
          const meta = [model.kind, model.state, model.device && `on ${model.device}`, describeExpiry(model)].filter(Boolean).join(" · ");
          const unloadButton = button("Unload", (element) => unload(model.id, element), { accessibleName: `Unload ${model.id}` });
          unloadButton.disabled = model.state !== "loaded";
          return listItem(model.id, meta, [unloadButton]);
        }),
      );
      empty.hidden = models.length > 0;
    } catch (error) {
      loadedList.replaceChildren();
      empty.hidden = true;
      showStatus(status, describeError(error), { error: true });
    }
  };

  const renderRegistry = () => {
    if (!registry) return;
    const wanted = filter.value.trim().toLowerCase();
    const shown = registry.data.filter((model) => !wanted || model.id.toLowerCase().includes(wanted) || model.language.join(" ").toLowerCase().includes(wanted));
    registryList.replaceChildren(
      ...shown.map((model) => {
        const meta = [
          model.kind,
          model.language.slice(0, 6).join(", ") + (model.language.length > 6 ? ", …" : ""),
          model.size_bytes ? formatBytes(model.size_bytes) : "",
          model.bundled ? "bundled" : model.available ? "downloaded" : "not downloaded",
        ].filter(Boolean).join(" · ");
        const buttons = [];
        if (model.available) buttons.push(button("Load", (element) => load(model.id, element), { accessibleName: `Load ${model.id}` }));
        else buttons.push(button("Download", (element) => download(model.id, element), { accessibleName: `Download ${model.id}` }));
        if (model.available && !model.bundled) buttons.push(button("Delete", (element) => remove(model.id, element), { accessibleName: `Delete ${model.id} from the cache` }));
        return listItem(model.id, meta, buttons);
      }),
    );
  };

  const refreshRegistry = async () => {
    try {
      registry = await apiJson("/v1/registry");
      registryErrors.textContent = registry.hub_errors.length
        ? `Only models on this machine are listed: ${registry.hub_errors.join(" ")}`
        : "";
      registryErrors.hidden = registry.hub_errors.length === 0;
      renderRegistry();
    } catch (error) {
      registry = null;
      registryList.replaceChildren();
      showStatus(status, describeError(error), { error: true });
    }
  };

  const refresh = async () => {
    if (status.classList.contains("error")) showStatus(status, "");
    await Promise.all([refreshLoaded(), refreshRegistry()]);
  };

  filter.addEventListener("input", renderRegistry);
  $("models-refresh").addEventListener("click", refresh);
  loadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = loadId.value.trim();
    if (!id) {
      showStatus(status, "Type the id of a model to load, e.g. Systran/faster-whisper-tiny.en.", { error: true });
      loadId.focus();
      return;
    }
    load(id, $("models-load"));
  });

  return {
    shown: refresh,
    reload: () => (panel.hidden ? undefined : refresh()),
  };
}
