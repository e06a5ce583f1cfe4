// The page's only script: sends the prompt (and an upload) to /v1/generate with
// stream=true, draws each image_generation.partial_image band as it arrives, and keeps
// the session's turns as thumbnails. The server keeps the session; this page keeps its id.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { session: null, upload: null, busy: false, turns: 0 };

function headers() {
  const key = $("apikey").value || localStorage.getItem("omni_img_key") || "";
  return key ? { Authorization: "Bearer " + key } : {};
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadInfo() {
  const response = await fetch("/v1/info", { headers: headers() });
  if (!response.ok) {
    $("meta").textContent = "server answered " + response.status + " (API key?)";
    return;
  }
  const info = await response.json();
  const size = info.image_size.width + "×" + info.image_size.height;
  $("meta").textContent = "bundle " + info.bundle_id.slice(0, 12) + " · " + size + " · " +
    info.num_bands + " bands";
  $("trust").textContent = info.c2pa;
}

// Server-sent events from a fetch body: blocks separated by a blank line, each with
// "event:" and "data:" lines.
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

function pngUrl(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
}

function addTurn(url, prompt) {
  state.turns += 1;
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = url;
  img.alt = prompt;
  img.title = prompt;
  const caption = document.createElement("figcaption");
  caption.textContent = state.turns + ". " + prompt.slice(0, 24);
  figure.append(img, caption);
  $("strip").append(figure);
}

async function generate(prompt) {
  const form = new FormData();
  form.append("prompt", prompt);
  form.append("stream", "true");
  // An upload starts a new session from that image; otherwise the turn continues this one.
  form.append("session", state.upload || !state.session ? "new" : state.session);
  if (state.upload) form.append("image", state.upload, state.upload.name);
  const current = $("current");
  current.dataset.partials = "0";
  current.dataset.final = "0";
  setStatus("waiting for the model…");
  const response = await fetch("/v1/generate", { method: "POST", body: form, headers: headers() });
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: { message: response.statusText } }));
    throw new Error(body.error.message);
  }
  for await (const event of readEvents(response)) {
    if (event.type === "image_generation.partial_image") {
      current.src = pngUrl(event.b64_json);
      current.dataset.partials = String(event.partial_image_index + 1);
      setStatus("band " + (event.partial_image_index + 1) + "…");
    } else if (event.type === "image_generation.completed") {
      const url = pngUrl(event.b64_json);
      current.src = url;
      current.dataset.final = "1";
      if (state.upload) $("strip").replaceChildren();
      if (state.upload) state.turns = 0;
      state.session = event.session_id;
      state.upload = null;
      $("source").style.display = "none";
      addTurn(url, prompt);
      const link = $("download");
      link.href = url;
      link.download = "omni_img_turn_" + event.turn + ".png";
      link.hidden = false;
      setStatus("turn " + event.turn + " · seed " + event.seed + " · " + event.c2pa);
    } else if (event.type === "error") {
      throw new Error(event.error.message);
    }
  }
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || state.busy) return;
  state.busy = true;
  $("send").disabled = true;
  try {
    await generate(prompt);
    $("prompt").value = "";
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
});

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (!file) return;
  state.upload = file;
  $("source").src = URL.createObjectURL(file);
  $("source").style.display = "block";
  setStatus("the next prompt edits " + file.name + " (a new session)");
});

$("new-session").addEventListener("click", () => {
  state.session = null;
  state.turns = 0;
  $("strip").replaceChildren();
  setStatus("new session");
});

$("apikey").addEventListener("change", () => {
  localStorage.setItem("omni_img_key", $("apikey").value);
  loadInfo();
});

loadInfo();
