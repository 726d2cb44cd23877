// The playground's entry point: tabs, the API key field, the refusal notice, and the four panels.

import { apiJson, apiKey, setApiKey } from "./api.js";
import { LANGUAGES } from "./languages.js";
import { setUpLive } from "./live.js";
import { setUpModels } from "./models.js";
import { setUpSpeech } from "./speech.js";
import { setUpTranscribe } from "./transcribe.js";

const $ = (id) => document.getElementById(id);

function setUpTabs(onShow) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab, { focus = false } = {}) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    const name = tab.id.replace("tab-", "");
    history.replaceState(null, "", name === "transcribe" ? window.location.pathname : `#${name}`);
    onShow(name);
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab));
    // The WAI-ARIA tabs pattern: arrows, Home and End move between tabs.
    tab.addEventListener("keydown", (event) => {
      const index = tabs.indexOf(tab);
      const next = {
        ArrowRight: tabs[(index + 1) % tabs.length],
        ArrowLeft: tabs[(index - 1 + tabs.length) % tabs.length],
        Home: tabs[0],
        End: tabs[tabs.length - 1],
      }[event.key];
      if (next) {
        event.preventDefault();
        select(next, { focus: true });
      }
    });
  }
  const fromHash = $(`tab-${window.location.hash.slice(1)}`);
  select(fromHash?.getAttribute("role") === "tab" ? fromHash : tabs[0]);
}

function setUpKeyField(onChange) {
  const field = $("api-key");
  const show = $("api-key-show");
  field.value = apiKey();
  let timer;
  field.addEventListener("input", () => {
    clearTimeout(timer);
    // Stored at once (so a call made right away uses it); the panels reload once typing pauses.
    setApiKey(field.value);
    timer = setTimeout(onChange, 400);
  });
  $("api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    onChange();
  });
  field.addEventListener("change", () => {
    clearTimeout(timer);
    onChange();
  });
  show.addEventListener("click", () => {
    const showing = field.type === "text";
    field.type = showing ? "password" : "text";
    show.setAttribute("aria-pressed", String(!showing));
    show.textContent = showing ? "Show" : "Hide";
  });
}

function setUpNotice() {
  const notice = $("notice");
  window.addEventListener("speaches:refused", (event) => {
    notice.textContent = event.detail;
    notice.hidden = false;
  });
  const clear = () => {
    notice.hidden = true;
    notice.textContent = "";
  };
  window.addEventListener("speaches:accepted", clear);
  window.addEventListener("speaches:key-changed", clear);
}

function fillLanguages() {
  $("languages").replaceChildren(
    ...LANGUAGES.map(([code, name]) => Object.assign(document.createElement("option"), { value: code, label: name })),
  );
}

/** The model fields' suggestions, from GET /v1/models (what is here without a download). */
async function fillModelSuggestions() {
  let models = [];
  try {
    models = (await apiJson("/v1/models")).data;
  } catch {
    return; // the panels say why when they call the API themselves
  }
  const option = (model) => Object.assign(document.createElement("option"), { value: model.id, label: model.kind });
  $("stt-models").replaceChildren(...models.filter((model) => model.kind === "stt").map(option));
  $("all-models").replaceChildren(...models.map(option));
}

const panels = {
  transcribe: setUpTranscribe(),
  speech: setUpSpeech(),
  live: setUpLive(),
  models: setUpModels(),
};

/** After the key changed: everything the page fetched may read differently now. */
function reload() {
  fillModelSuggestions();
  for (const panel of Object.values(panels)) panel.reload?.();
}

setUpNotice();
fillLanguages();
setUpKeyField(reload);
fillModelSuggestions();
panels.speech.reload();
setUpTabs((name) => panels[name].shown?.());
