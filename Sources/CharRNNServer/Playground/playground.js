// The playground: reads the model's facts, sends POST /v1/generate with
// "stream": true and shows the Server-Sent Events as they arrive. Stop
// aborts the request, which closes the connection and frees the server's stream.
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;

function apiKey() {
  return $("api-key").value.trim() || localStorage.getItem("charrnn-api-key") || "";
}

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) result["Authorization"] = "Bearer " + key;
  return result;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

function needKey(message) {
  document.body.classList.add("needs-key");
  setStatus(message + " Type the server's API key and try again.", true);
  $("api-key").focus();
}

async function loadModel() {
  let response;
  try {
    response = await fetch("/v1/model", { headers: headers() });
  } catch (error) {
    $("model-line").textContent = "The server cannot be reached.";
    return;
  }
  if (response.status === 401) { needKey("This server needs an API key."); $("model-line").textContent = "Model: needs the API key."; return; }
  const model = await response.json();
  const cell = model.cell.toUpperCase(); // as the library's Cell.displayName; the cells come from the server
  $("model-line").textContent =
    `${model.layers} ${cell} layer${model.layers === 1 ? "" : "s"} × ${model.hidden_size} units, ` +
    `${model.vocabulary_size} characters, ${model.parameters.toLocaleString("en")} parameters`;
  const facts = [
    ["Cell", cell], ["Layers", model.layers], ["Hidden units", model.hidden_size],
    ["Parameters", model.parameters.toLocaleString("en")], ["Vocabulary", model.vocabulary.join("").replace(/\n/g, "⏎")],
  ];
  if (model.run) {
    facts.push(["Iteration", model.run.iteration], ["Validation loss", model.run.val_loss],
               ["Best validation loss", model.run.best_val_loss]);
  }
  facts.push(["File", model.file], ["Longest request", model.server.max_length + " characters"],
             ["Streams stepped together", model.server.max_streams]);
  const list = $("facts");
  list.replaceChildren();
  for (const [name, value] of facts) {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = String(value);
    list.append(dt, dd);
  }
  $("length").max = model.server.max_length;
  $("top-k").max = model.vocabulary_size;
  window.charrnnModel = model;
}

function requestBody() {
  const body = { prime: $("prime").value, length: Number($("length").value), stream: true,
                 temperature: Number($("temperature").value), top_k: Number($("top-k").value) };
  const topP = Number($("top-p").value);
  if (topP < 1) body.top_p = topP;
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = Number(seed);
  return body;
}

// Reads "data:" and "event:" lines of Server-Sent Events from a fetch body.
async function* serverSentEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let boundary;
    while ((boundary = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield { event, data: JSON.parse(data) };
    }
  }
}

async function generate() {
  if (controller) return;
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("output-prime").textContent = "";
  $("output-text").textContent = "";
  setStatus("Waiting for the first character…");
  const started = performance.now();
  let generated = 0, firstAt = null, seed = null;
  try {
    const response = await fetch("/v1/generate", {
      method: "POST", headers: headers(), body: JSON.stringify(requestBody()), signal: controller.signal,
    });
    if (response.status === 401) { needKey((await response.json()).error + "."); return; }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: response.statusText }));
      setStatus(`${response.status}: ${problem.error}`, true);
      return;
    }
    let first = true;
    for await (const { event, data } of serverSentEvents(response.body)) {
      if (event === "end") {
        const seconds = (performance.now() - started) / 1000;
        const reason = { length: "done", shutdown: "the server shut down", timeout: "timed out", error: "failed: " + data.error }[data.finish_reason] || data.finish_reason;
        setStatus(`${reason}: ${data.length} characters in ${seconds.toFixed(2)} s, seed ${data.seed}` +
                  (firstAt ? `, first after ${(firstAt - started).toFixed(0)} ms` : ""), data.finish_reason === "error");
        break;
      }
      if (first) {
        seed = data.seed;
        $("output-prime").textContent = data.text;
        first = false;
      } else {
        if (firstAt === null) firstAt = performance.now();
        generated += [...data.text].length;
        $("output-text").textContent += data.text;
        setStatus(`${generated} characters, seed ${seed}`);
      }
    }
  } catch (error) {
    if (error.name === "AbortError") setStatus(`Stopped after ${generated} characters (seed ${seed}).`);
    else setStatus("The request failed: " + error.message, true);
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// Lets a text file be dropped on `area` (a textarea): its text replaces the
// area's, read as charrnn sample --prime-file reads a file (\r\n and \r
// become \n when the model has no \r); then `dropped(file, text)`.
function acceptDroppedText(area, dropped) {
  area.addEventListener("dragover", (e) => { e.preventDefault(); area.classList.add("dragging"); });
  area.addEventListener("dragleave", () => area.classList.remove("dragging"));
  area.addEventListener("drop", async (e) => {
    e.preventDefault();
    area.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (!file) return;
    let text = await file.text();
    const vocabulary = (window.charrnnModel && window.charrnnModel.vocabulary) || [];
    if (!vocabulary.includes("\r")) text = text.replace(/\r\n?/g, "\n");
    area.value = text;
    dropped(file, text);
  });
}

function wire() {
  $("temperature").addEventListener("input", (e) => { $("temperature-value").textContent = Number(e.target.value).toFixed(2); });
  $("top-p").addEventListener("input", (e) => {
    const p = Number(e.target.value);
    $("top-p-value").textContent = p < 1 ? p.toFixed(2) : "off";
  });
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("api-key").addEventListener("change", (e) => { localStorage.setItem("charrnn-api-key", e.target.value.trim()); loadModel(); });
  $("prime").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(); });

  acceptDroppedText($("prime"), (file, text) => {
    $("prime-note").textContent = `${file.name}: ${[...text].length} characters`;
  });
}

// Settings from the address, so a setting can be shared as a link:
// /?prime=Anna&length=300&temperature=0.8&top_k=5&top_p=0.9&seed=7&run=1
function settingsFromAddress() {
  const query = new URLSearchParams(window.location.search);
  const fields = { prime: "prime", length: "length", temperature: "temperature", top_k: "top-k", top_p: "top-p", seed: "seed" };
  for (const [name, id] of Object.entries(fields)) {
    if (query.has(name)) { $(id).value = query.get(name); $(id).dispatchEvent(new Event("input")); }
  }
  return query.get("run") === "1";
}

wire();
const runAtOnce = settingsFromAddress();
loadModel().then(() => { if (runAtOnce) generate(); });
