// The playground's Explain view: POST /v1/trace with every unit, then the
// text coloured by surprise or by one unit's activation, the model's
// likeliest alternatives on hover, and a unit finder that ranks every unit
// by how well its activation follows a pattern (Pearson correlation, as
// LSTMVis and Karpathy's char-rnn pictures look for units).
// The pure parts (patterns, ranking, colours) are on window.charrnnExplain
// for the headless-Chromium check (Tools/playground/explain.py).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let trace = null; // the last /v1/trace answer
  let chosen = { layer: 0, unit: 0 };

  // --- Patterns: one number per character -------------------------------

  // Built-in patterns as regular expressions whose matches are marked 1:
  // straight and curly quotes, parentheses, a word's first letter.
  const builtIn = {
    quotes: /"[^"]*"|“[^”]*”|«[^»]*»/gu,
    parentheses: /\([^()]*\)/gu,
    word: /(?<![\p{L}\p{N}'’])[\p{L}\p{N}]/gu,
  };

  // The pattern over `characters` (one string per Unicode character): 1
  // where a match of the expression covers the character, 0 elsewhere; for
  // "line", the character's column (0 at a line's start).
  function patternSeries(characters, kind, expression) {
    if (kind === "line") {
      const columns = [];
      let column = 0;
      for (const character of characters) {
        columns.push(column);
        column = character === "\n" ? 0 : column + 1;
      }
      return columns;
    }
    const regex = kind === "regex" ? new RegExp(expression, "gu") : builtIn[kind];
    if (!regex) throw new Error("no pattern " + kind);
    // A match's offsets count UTF-16 code units; map them to characters.
    const text = characters.join("");
    const characterAt = new Int32Array(text.length + 1);
    let offset = 0;
    characters.forEach((character, index) => {
      for (let k = 0; k < character.length; k++) characterAt[offset + k] = index;
      offset += character.length;
    });
    characterAt[text.length] = characters.length;
    const marks = new Array(characters.length).fill(0);
    regex.lastIndex = 0;
    for (const match of text.matchAll(regex)) {
      if (match[0].length === 0) continue;
      const first = characterAt[match.index], end = characterAt[match.index + match[0].length];
      for (let i = first; i < end; i++) marks[i] = 1;
    }
    return marks;
  }

  // Pearson's correlation of two equal-length series (0 when either is constant).
  function correlation(xs, ys) {
    const n = xs.length;
    let mx = 0, my = 0;
    for (let i = 0; i < n; i++) { mx += xs[i]; my += ys[i]; }
    mx /= n; my /= n;
    let sxy = 0, sxx = 0, syy = 0;
    for (let i = 0; i < n; i++) {
      const dx = xs[i] - mx, dy = ys[i] - my;
      sxy += dx * dy; sxx += dx * dx; syy += dy * dy;
    }
    return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : 0;
  }

  // Every unit of `h` ([layer][unit][position]) ranked by |r| with
  // `pattern`, strongest first; `units` maps an index to the model's unit.
  function rankUnits(h, units, pattern, count) {
    const ranked = [];
    h.forEach((layer, l) => layer.forEach((series, u) => {
      ranked.push({ layer: l, unit: units[u], index: u, r: correlation(series, pattern) });
    }));
    ranked.sort((a, b) => Math.abs(b.r) - Math.abs(a.r) || a.layer - b.layer || a.unit - b.unit);
    return ranked.slice(0, count);
  }

  // --- Colours ------------------------------------------------------------

  // Surprise in bits: white at 0, deep red at 8 bits and beyond.
  function surpriseColour(bits) {
    if (bits === null || bits === undefined) return "transparent";
    const a = Math.min(Math.max(bits / 8, 0), 1);
    return `rgba(214, 39, 40, ${a.toFixed(3)})`;
  }

  // An activation in [-1, 1] on a diverging scale: blue below 0, orange above.
  function activationColour(value) {
    if (value === null || value === undefined) return "transparent";
    const v = Math.max(-1, Math.min(1, value));
    return v >= 0 ? `rgba(230, 97, 1, ${v.toFixed(3)})` : `rgba(33, 102, 172, ${(-v).toFixed(3)})`;
  }

  // --- The view -------------------------------------------------------------

  function setStatus(text, isError) {
    $("explain-status").textContent = text;
    $("explain-status").classList.toggle("error", Boolean(isError));
  }

  async function explain() {
    const model = window.charrnnModel;
    if (!model) { setStatus("The model's facts have not loaded yet.", true); return; }
    let characters = [...$("explain-text").value];
    if (characters.length === 0) { setStatus("Type, paste or drop a text first.", true); return; }
    const limit = model.server.max_trace_characters;
    const note = [];
    if (characters.length > limit) {
      characters = characters.slice(0, limit);
      note.push(`the first ${limit} characters (the server's limit)`);
    }
    // Every unit when the server allows it, else the first ones it allows.
    const perLayer = Math.min(model.hidden_size, Math.floor(model.server.max_trace_units / model.layers));
    const units = perLayer === model.hidden_size ? "all" : Array.from({ length: perLayer }, (_, i) => i);
    if (perLayer < model.hidden_size) note.push(`units 0–${perLayer - 1} of each layer (the server's limit)`);
    setStatus("Tracing…");
    $("explain-run").disabled = true;
    const started = performance.now();
    try {
      const response = await fetch("/v1/trace", {
        method: "POST", headers: headers(), body: JSON.stringify({ text: characters.join(""), units, top: 5 }),
      });
      const answer = await response.json().catch(() => ({ error: response.statusText }));
      if (!response.ok) { setStatus(`${response.status}: ${answer.error}`, true); return; }
      trace = answer;
      const layers = $("explain-layer");
      layers.replaceChildren(...Array.from({ length: trace.layers }, (_, l) => new Option(String(l + 1), String(l))));
      layers.value = String(Math.min(chosen.layer, trace.layers - 1));
      $("explain-unit").max = String(trace.units.length ? trace.units[trace.units.length - 1] : 0);
      render();
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      const bits = trace.bits_per_character === null ? "–" : trace.bits_per_character.toFixed(3);
      setStatus(`${trace.characters.length} characters in ${seconds} s: mean surprise ${bits} bits/char` +
                (note.length ? "; " + note.join(", ") : ""));
      if ($("finder-results").children.length) findUnits();
    } catch (error) {
      setStatus("The request failed: " + error.message, true);
    } finally {
      $("explain-run").disabled = false;
    }
  }

  // The chosen unit's series ([position]) in the last trace, or null.
  function chosenSeries() {
    if (!trace || !trace.h) return null;
    const index = trace.units.indexOf(chosen.unit);
    return index < 0 ? null : trace.h[chosen.layer][index];
  }

  function render() {
    if (!trace) return;
    const byUnit = $("explain-colour").value === "unit";
    const series = byUnit ? chosenSeries() : null;
    const view = $("explain-view");
    const spans = trace.characters.map((character, t) => {
      const span = document.createElement("span");
      span.textContent = character;
      span.dataset.t = String(t);
      const bits = trace.surprise[t] === null ? null : trace.surprise[t] / Math.LN2;
      span.style.backgroundColor = byUnit ? activationColour(series ? series[t] : null) : surpriseColour(bits);
      return span;
    });
    view.replaceChildren(...spans);
    const legend = $("explain-legend");
    if (byUnit) {
      legend.innerHTML = series
        ? `layer ${chosen.layer + 1}, unit ${chosen.unit}: −1 <span class="scale" style="background: linear-gradient(to right, ${activationColour(-1)}, #fff, ${activationColour(1)})"></span> +1`
        : `unit ${chosen.unit} was not traced`;
    } else {
      legend.innerHTML = `surprise: 0 bits <span class="scale" style="background: linear-gradient(to right, #fff, ${surpriseColour(8)})"></span> 8+ bits`;
    }
  }

  function showTip(event) {
    const t = event.target.dataset ? event.target.dataset.t : undefined;
    const tip = $("explain-tip");
    if (t === undefined || !trace) { tip.hidden = true; return; }
    const i = Number(t);
    const shown = (c) => c === "\n" ? "⏎" : c === " " ? "␣" : c;
    const lines = [`'${shown(trace.characters[i])}'  position ${i}`];
    if (trace.probability[i] === null) {
      lines.push("the first character: nothing predicts it");
    } else {
      lines.push(`p ${trace.probability[i].toFixed(4)}, surprise ${(trace.surprise[i] / Math.LN2).toFixed(2)} bits, entropy ${(trace.entropy[i] / Math.LN2).toFixed(2)} bits`);
      lines.push("likeliest: " + trace.top[i].map((a) => `'${shown(a.character)}' ${a.probability.toFixed(3)}`).join("  "));
    }
    const series = chosenSeries();
    if (series) lines.push(`layer ${chosen.layer + 1} unit ${chosen.unit}: h = ${series[i]}`);
    tip.textContent = lines.join("\n");
    tip.hidden = false;
    tip.style.left = `${Math.min(event.clientX + 12, window.innerWidth - tip.offsetWidth - 8)}px`;
    tip.style.top = `${event.clientY + 16}px`;
  }

  function choose(layer, unit) {
    chosen = { layer, unit };
    $("explain-layer").value = String(layer);
    $("explain-unit").value = String(unit);
    $("explain-colour").value = "unit";
    for (const item of $("finder-results").children) {
      item.classList.toggle("chosen", Number(item.dataset.layer) === layer && Number(item.dataset.unit) === unit);
    }
    render();
  }

  function findUnits() {
    if (!trace || !trace.h) { setStatus("Explain a text first: the finder ranks the units of its trace.", true); return; }
    const kind = $("finder-pattern").value;
    let pattern;
    try {
      pattern = patternSeries(trace.characters, kind, $("finder-regex").value);
    } catch (error) {
      setStatus("The regular expression is not valid: " + error.message, true);
      return;
    }
    if (pattern.every((v) => v === pattern[0])) {
      setStatus("The pattern marks every character of this text alike: nothing to correlate with.", true);
      $("finder-results").replaceChildren();
      return;
    }
    const ranked = rankUnits(trace.h, trace.units, pattern, 10);
    $("finder-results").replaceChildren(...ranked.map((entry) => {
      const item = document.createElement("li");
      item.dataset.layer = String(entry.layer);
      item.dataset.unit = String(entry.unit);
      item.textContent = `layer ${entry.layer + 1} unit ${entry.unit}: r = ${entry.r >= 0 ? "+" : "−"}${Math.abs(entry.r).toFixed(3)}`;
      item.addEventListener("click", () => choose(entry.layer, entry.unit));
      return item;
    }));
    const best = ranked[0];
    choose(best.layer, best.unit);
    const marked = kind === "line" ? "the column" : `${pattern.filter((v) => v).length} marked characters`;
    setStatus(`Ranked ${trace.h.length * trace.units.length} units against ${marked}; the best is layer ${best.layer + 1} unit ${best.unit} (r = ${best.r.toFixed(3)}).`);
  }

  function wire() {
    $("explain-run").addEventListener("click", explain);
    $("explain-use-output").addEventListener("click", () => {
      $("explain-text").value = $("output").textContent;
    });
    $("explain-colour").addEventListener("change", render);
    $("explain-layer").addEventListener("change", (e) => { chosen.layer = Number(e.target.value); render(); });
    $("explain-unit").addEventListener("input", (e) => { chosen.unit = Number(e.target.value); if ($("explain-colour").value === "unit") render(); });
    $("finder-run").addEventListener("click", findUnits);
    $("finder-pattern").addEventListener("change", (e) => { $("finder-regex").disabled = e.target.value !== "regex"; });
    $("finder-regex").disabled = true;
    $("explain-view").addEventListener("mousemove", showTip);
    $("explain-view").addEventListener("mouseleave", () => { $("explain-tip").hidden = true; });
    acceptDroppedText($("explain-text"), () => {});
  }

  wire();
  window.charrnnExplain = { patternSeries, correlation, rankUnits, surpriseColour, activationColour, explain, findUnits, choose };
})();
