// glmtool's chat page: vanilla JS, no dependencies. Model text only ever reaches the page as
// text nodes (textContent, Node.append of strings): the Markdown renderer builds elements, never
// HTML strings, so nothing a model writes can become markup.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    messages: $("messages"), empty: $("empty"), form: $("composer"), input: $("input"),
    send: $("send"), stop: $("stop"), status: $("status"), model: $("model"),
    newChat: $("new-chat"), toggle: $("toggle-settings"), settings: $("settings"),
    system: $("system"), temperature: $("temperature"), topP: $("top-p"),
    maxTokens: $("max-tokens"), tools: $("tools"), apiKey: $("api-key"),
  };

  // ------------------------------------------------------------ small helpers

  /** An element: props (class, text, on*, attributes) and children (nodes or strings = text). */
  function h(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of kids.flat()) if (c != null && c !== "") e.append(c);
    return e;
  }

  const store = {
    get(k) { try { return localStorage.getItem("glmtool." + k); } catch { return null; } },
    set(k, v) {
      try {
        if (v == null || v === "") localStorage.removeItem("glmtool." + k);
        else localStorage.setItem("glmtool." + k, v);
      } catch { /* storage disabled: settings last for this page only */ }
    },
  };

  let uidCounter = 0;
  const uid = (p) => `${p}-${++uidCounter}`;

  function setStatus(text, isError) {
    els.status.textContent = text || "";
    els.status.classList.toggle("error", !!isError);
  }

  // ------------------------------------------------------------ Markdown (safe subset)

  const FENCE = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const HR = /^ {0,3}([-*_])( *\1){2,} *$/;
  const QUOTE = /^ {0,3}> ?/;
  const LIST = /^(\s*)([-*+]|\d{1,9}[.)])(\s+|$)(.*)$/;
  const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
  const blank = (l) => /^\s*$/.test(l);
  const indentOf = (l) => {
    let n = 0;
    for (const c of l) { if (c === " ") n++; else if (c === "\t") n += 4; else break; }
    return n;
  };
  function dedent(l, n) {
    let i = 0, w = 0;
    while (i < l.length && w < n && (l[i] === " " || l[i] === "\t")) { w += l[i] === "\t" ? 4 : 1; i++; }
    return l.slice(i);
  }
  const isTable = (lines, i) =>
    lines[i].includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-");
  /** Whether a line starts a block that ends a paragraph. */
  function startsBlock(lines, i) {
    const l = lines[i];
    const m = LIST.exec(l);
    return FENCE.test(l) || HEADING.test(l) || HR.test(l) || QUOTE.test(l) || isTable(lines, i) ||
      (m && m[4] !== "" && (/^[-*+]$/.test(m[2]) || /^1[.)]$/.test(m[2])));
  }

  function renderMarkdown(src, into) {
    into.replaceChildren(...blocks(src.replace(/\r\n?/g, "\n").split("\n")));
  }

  function blocks(lines) {
    const out = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (blank(line)) { i++; continue; }
      if ((m = FENCE.exec(line))) {
        const [, indent, fence, lang] = m;
        const body = [];
        i++;
        while (i < lines.length) {
          const t = lines[i].trim();
          if (t.length >= fence.length && t === fence[0].repeat(t.length)) { i++; break; }
          body.push(dedent(lines[i], indent.length));
          i++;
        }
        out.push(codeBlock(body.join("\n"), lang));
      } else if ((m = HEADING.exec(line))) {
        const level = m[1].length;
        // Reply headings sit below the page's own h1/h2.
        out.push(inline(m[2], h("h" + Math.min(level + 2, 6), { class: "h" + level })));
        i++;
      } else if (HR.test(line)) {
        out.push(h("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && !blank(lines[i]) && QUOTE.test(lines[i])) {
          inner.push(lines[i].replace(QUOTE, ""));
          i++;
        }
        out.push(h("blockquote", null, blocks(inner)));
      } else if (isTable(lines, i)) {
        const [table, next] = parseTable(lines, i);
        out.push(table);
        i = next;
      } else if ((m = LIST.exec(line)) && m[4] !== "") {
        const [list, next] = parseList(lines, i);
        out.push(list);
        i = next;
      } else {
        const para = [line.trim()];
        i++;
        while (i < lines.length && !blank(lines[i]) && !startsBlock(lines, i)) {
          para.push(lines[i].trim());
          i++;
        }
        out.push(inline(para.join("\n"), h("p")));
      }
    }
    return out;
  }

  function parseList(lines, i) {
    const first = LIST.exec(lines[i]);
    const base = first[1].length;
    const ordered = /\d/.test(first[2]);
    const list = h(ordered ? "ol" : "ul");
    const start = parseInt(first[2], 10);
    if (ordered && start !== 1) list.setAttribute("start", String(start));
    const items = [];
    let item = null;
    while (i < lines.length) {
      const line = lines[i];
      const m = LIST.exec(line);
      if (m && m[1].length <= base + 1) {
        if (/\d/.test(m[2]) !== ordered || (m[4] === "" && !item)) break;
        item = [m[4]];
        item.indent = m[1].length + m[2].length + 1;
        items.push(item);
        i++;
        continue;
      }
      if (blank(line)) {
        let j = i + 1;
        while (j < lines.length && blank(lines[j])) j++;
        const n = lines[j];
        const mm = n === undefined ? null : LIST.exec(n);
        if (n !== undefined && (indentOf(n) > base + 1 || (mm && mm[1].length <= base + 1 && /\d/.test(mm[2]) === ordered))) {
          item.push("");
          i++;
          continue;
        }
        break;
      }
      if (indentOf(line) > base) { item.push(dedent(line, item.indent)); i++; continue; }
      if (!startsBlock(lines, i) && item[item.length - 1] !== "") { item.push(line.trim()); i++; continue; }
      break;
    }
    for (const it of items) {
      // A one-paragraph item is rendered without its <p>, like tight Markdown lists.
      const kids = blocks(it);
      const li = h("li");
      if (kids.length && kids[0].tagName === "P") li.append(...kids.shift().childNodes);
      li.append(...kids);
      list.append(li);
    }
    return [list, i];
  }

  function parseTable(lines, i) {
    const cells = (l) => {
      let s = l.trim();
      if (s.startsWith("|")) s = s.slice(1);
      if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
      return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
    };
    const aligns = cells(lines[i + 1]).map((c) =>
      c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : c.startsWith(":") ? "left" : null);
    const row = (l, tag) => h("tr", null, cells(l).map((c, k) =>
      inline(c, h(tag, aligns[k] ? { class: "align-" + aligns[k] } : null))));
    const head = h("thead", null, row(lines[i], "th"));
    const body = h("tbody");
    i += 2;
    while (i < lines.length && !blank(lines[i]) && lines[i].includes("|")) {
      body.append(row(lines[i], "td"));
      i++;
    }
    return [h("table", null, head, body), i];
  }

  // Inline syntax, earliest match first; the alternatives' groups are read in `inline`.
  const INLINE = new RegExp([
    /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/.source, // 1, 2: code span
    // 3: math, kept verbatim as text ($$…$$, \(…\), \[…\], $…$ but not "$5 and $6")
    /(\$\$[\s\S]+?\$\$|\\\([\s\S]+?\\\)|\\\[[\s\S]+?\\\]|\$(?=[^\s$])[^$\n]*?[^\s$\\]\$(?!\d))/.source,
    /\\([\\`*_{}[\]()#+\-.!|~<>$])/.source, // 4: backslash escape
    /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 5: bold
    /(?<![\w\\])__(?=\S)([\s\S]*?\S)__(?!\w)/.source, // 6: bold
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 7: strikethrough
    /\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/.source, // 8: italic
    /(?<![\w\\])_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/.source, // 9: italic
    // 10, 11: [label](url "title")
    /\[([^\]\n]+)\]\(\s*<?([^\s()<>]+(?:\([^\s()]*\)[^\s()<>]*)*)>?(?:\s+"[^"\n]*")?\s*\)/.source,
    // 12: <url> or a bare URL (ASCII, without trailing punctuation)
    /<?(https?:\/\/[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]*[A-Za-z0-9\-_~/#=&%+])>?/.source,
  ].join("|"), "g");

  const safeHref = (u) => (/^(https?:\/\/|mailto:)/i.test(u) ? u : null);

  function text(parent, s) {
    s.split("\n").forEach((part, k) => {
      if (k) parent.append(h("br"));
      if (part) parent.append(part);
    });
  }

  function link(href, label) {
    return h("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, label);
  }

  /** Appends the inline Markdown of `s` to `parent` (as elements and text nodes); returns it. */
  function inline(s, parent) {
    const re = new RegExp(INLINE.source, "g");
    let last = 0, m;
    while ((m = re.exec(s))) {
      if (m.index > last) text(parent, s.slice(last, m.index));
      last = re.lastIndex;
      if (m[2] !== undefined) {
        let c = m[2].replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(c)) c = c.slice(1, -1);
        parent.append(h("code", null, c));
      } else if (m[3] !== undefined) text(parent.appendChild(h("span", { class: "math" })), m[3]);
      else if (m[4] !== undefined) parent.append(m[4]);
      else if (m[5] !== undefined || m[6] !== undefined) parent.append(inline(m[5] ?? m[6], h("strong")));
      else if (m[7] !== undefined) parent.append(inline(m[7], h("del")));
      else if (m[8] !== undefined || m[9] !== undefined) parent.append(inline(m[8] ?? m[9], h("em")));
      else if (m[10] !== undefined) {
        const href = safeHref(m[11]);
        if (href) parent.append(link(href, m[10]));
        else text(parent, m[0]); // javascript:, data:, relative paths...: shown as text
      } else if (m[12] !== undefined) {
        const a = link(m[12], m[12]);
        parent.append(a);
      }
    }
    if (last < s.length) text(parent, s.slice(last));
    return parent;
  }

  function codeBlock(code, lang) {
    const btn = h("button", { type: "button", class: "copy", "aria-label": "Copy code" }, "Copy");
    const pre = h("pre", null, h("code", lang ? { "data-lang": lang } : null, code));
    btn.addEventListener("click", () => copyText(code, btn));
    return h("div", { class: "code" }, h("div", { class: "code-head" }, h("span", null, lang || "code"), btn), pre);
  }

  async function copyText(s, btn) {
    try {
      await navigator.clipboard.writeText(s);
    } catch {
      // Not a secure context (served on a LAN address over http): the old way.
      const ta = h("textarea", { class: "sr-only", "aria-hidden": "true" });
      ta.value = s;
      document.body.append(ta);
      ta.select();
      try { document.execCommand("copy"); } catch { /* nothing more to try */ }
      ta.remove();
    }
    btn.textContent = "Copied";
    setTimeout(() => { btn.textContent = "Copy"; }, 1500);
  }

  // ------------------------------------------------------------ settings

  const fields = [
    ["system", els.system], ["temperature", els.temperature], ["top_p", els.topP],
    ["max_tokens", els.maxTokens], ["tools", els.tools], ["api_key", els.apiKey],
  ];
  for (const [key, el] of fields) {
    el.value = store.get(key) ?? "";
    el.addEventListener("input", () => store.set(key, el.value));
  }
  els.apiKey.addEventListener("change", () => loadModel());
  // Enter in a settings field must not submit anything (the CSP forbids it anyway).
  $("settings-form").addEventListener("submit", (e) => { e.preventDefault(); loadModel(); });

  function showSettings(open) {
    els.settings.hidden = !open;
    els.toggle.setAttribute("aria-expanded", String(open));
    store.set("settings_open", open ? "1" : "0");
  }
  const savedOpen = store.get("settings_open");
  showSettings(savedOpen ? savedOpen === "1" : window.innerWidth >= 1000);
  els.toggle.addEventListener("click", () => showSettings(els.settings.hidden));

  function number(el, name, lo, hi, integer) {
    const v = el.value.trim();
    if (v === "") return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < lo || n > hi || (integer && !Number.isInteger(n))) {
      throw new Error(`${name} must be ${integer ? "a whole number" : "a number"} from ${lo} to ${hi}`);
    }
    return n;
  }

  /** The request fields from the settings; throws with a message the user can act on. */
  function requestOptions() {
    const o = {};
    const t = number(els.temperature, "Temperature", 0, 2);
    const p = number(els.topP, "Top-p", 0, 1);
    const n = number(els.maxTokens, "Max tokens", 1, 1e9, true);
    if (t !== undefined) o.temperature = t;
    if (p !== undefined) o.top_p = p;
    if (n !== undefined) o.max_tokens = n;
    const tools = els.tools.value.trim();
    if (tools) {
      let v;
      try { v = JSON.parse(tools); } catch (e) { throw new Error(`Tools: not JSON (${e.message})`); }
      if (!Array.isArray(v)) v = [v];
      o.tools = v.map((f) => (f && f.type === undefined && f.name ? { type: "function", function: f } : f));
    }
    return o;
  }

  function headers() {
    const hd = { "Content-Type": "application/json" };
    const key = els.apiKey.value.trim();
    if (key) hd.Authorization = "Bearer " + key;
    return hd;
  }

  function askForKey() {
    showSettings(true);
    els.apiKey.focus();
  }
  const KEY_NEEDED = "This server needs an API key (401): enter it under Settings → API key.";

  let modelName = "";
  async function loadModel() {
    try {
      const r = await fetch("/v1/models", { headers: headers() });
      if (r.status === 401) {
        els.model.textContent = "API key needed";
        setStatus(KEY_NEEDED, true);
        askForKey();
        return;
      }
      const j = await r.json();
      modelName = (j.data && j.data[0] && j.data[0].id) || "";
      els.model.textContent = modelName || "unknown model";
      if (modelName) document.title = `${modelName} · glmtool chat`;
      if (els.status.classList.contains("error")) setStatus("");
    } catch {
      els.model.textContent = "server unreachable";
    }
  }

  // ------------------------------------------------------------ the conversation

  let history = []; // OpenAI messages, without the system prompt (added at each request)
  let controller = null; // the running request's AbortController
  let pendingTools = null; // the tool calls of the last reply, waiting for results
  let epoch = 0; // bumped by "New chat": a reply of an older chat does not touch the new one

  function nearBottom() {
    const m = els.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }
  function scrollDown() { els.messages.scrollTop = els.messages.scrollHeight; }

  function addMessage(role, label) {
    els.empty.hidden = true;
    const body = h("div", { class: "body" });
    const art = h("article", { class: "msg " + role, "aria-label": label }, h("div", { class: "role", "aria-hidden": "true" }, label), body);
    const stick = nearBottom();
    els.messages.append(art);
    if (stick) scrollDown();
    return { art, body };
  }

  function setBusy(busy) {
    if (!busy && document.activeElement === els.stop) els.input.focus();
    els.send.disabled = busy;
    els.send.hidden = busy;
    els.stop.hidden = !busy;
    els.stop.disabled = !busy;
    document.body.classList.toggle("busy", busy);
  }

  function stop() {
    if (controller) controller.abort();
  }

  /** The `data:` payloads of a server-sent-events response. */
  async function* sse(resp) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf = (buf + dec.decode(value, { stream: true })).replace(/\r\n/g, "\n");
        let k;
        while ((k = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, k);
          buf = buf.slice(k + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
          if (data) yield data;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  async function errorMessage(resp) {
    const t = await resp.text().catch(() => "");
    try { return JSON.parse(t).error.message || t; } catch { return t || resp.statusText; }
  }

  function mergeToolCalls(calls, deltas) {
    for (const d of deltas) {
      const k = Number.isInteger(d.index) ? d.index : calls.length;
      const c = calls[k] || (calls[k] = { id: "", type: "function", function: { name: "", arguments: "" } });
      if (d.id) c.id = d.id;
      const f = d.function || {};
      if (f.name) c.function.name += f.name;
      if (f.arguments != null) c.function.arguments += typeof f.arguments === "string" ? f.arguments : JSON.stringify(f.arguments);
    }
  }

  const fmt = (x, d) => (x >= 100 ? x.toFixed(0) : x.toFixed(d));

  /** The stats line of a finished reply. */
  function stats(r) {
    const parts = [];
    const secs = (r.tEnd - r.t0) / 1000;
    const u = r.usage, t = r.timings;
    if (r.stopped) parts.push("Stopped");
    let tps;
    if (t && t.predicted_per_second > 0) tps = t.predicted_per_second;
    else if (t && t.predicted_ms > 0) tps = (t.predicted_n / t.predicted_ms) * 1000;
    else if (u && u.completion_tokens > 1 && r.tFirst && r.tEnd > r.tFirst) {
      tps = (u.completion_tokens - 1) / ((r.tEnd - r.tFirst) / 1000);
    } else if (r.pieces > 1 && r.tFirst && r.tEnd > r.tFirst) tps = (r.pieces - 1) / ((r.tEnd - r.tFirst) / 1000);
    if (tps !== undefined) parts.push(`${fmt(tps, 1)} tokens/s`);
    if (u) {
      parts.push(`${u.completion_tokens} tokens`);
      const cached = u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens;
      let p = `prompt ${u.prompt_tokens}`;
      if (cached != null) p += ` (${cached} cached)`;
      const pps = t && (t.prompt_per_second || (t.prompt_ms > 0 ? (t.prompt_n / t.prompt_ms) * 1000 : 0));
      if (t && t.prompt_n > 0 && pps > 0) p += ` at ${fmt(pps, 1)} tokens/s`;
      parts.push(p);
    } else if (r.pieces) parts.push(`~${r.pieces} tokens`);
    parts.push(`${secs.toFixed(1)} s`);
    if (r.finish === "length") parts.push("max tokens reached");
    return parts.join(" · ");
  }

  async function generate() {
    let opts;
    try { opts = requestOptions(); } catch (e) {
      setStatus(e.message, true);
      showSettings(true);
      return;
    }
    for (const b of els.messages.querySelectorAll("button.retry")) b.remove();
    const messages = [];
    const sys = els.system.value.trim();
    if (sys) messages.push({ role: "system", content: sys });
    messages.push(...history);
    const body = { messages, stream: true, stream_options: { include_usage: true }, ...opts };
    if (modelName) body.model = modelName;

    const { art, body: out } = addMessage("assistant", "Assistant");
    art.setAttribute("aria-busy", "true");
    const statsEl = h("p", { class: "stats" });
    art.append(statsEl);
    const r = { t0: performance.now(), tFirst: 0, tEnd: 0, pieces: 0, text: "", usage: null, timings: null, finish: null, stopped: false, live: true };
    const myEpoch = epoch;
    const calls = [];
    let frame = 0; // the render queued for the next animation frame, if any
    const render = () => {
      if (frame) cancelAnimationFrame(frame);
      frame = 0;
      const stick = nearBottom();
      renderMarkdown(r.text, out);
      const lastBlock = out.lastElementChild;
      const cursor = h("span", { class: "cursor", "aria-hidden": "true" });
      if (r.live && lastBlock && /^(P|H\d)$/.test(lastBlock.tagName)) lastBlock.append(cursor);
      else if (r.live) out.append(cursor);
      if (stick) scrollDown();
    };
    render();

    controller = new AbortController();
    setBusy(true);
    setStatus("Generating… (Esc or Stop to stop)");
    let error = null;
    try {
      const resp = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
      });
      if (!resp.ok) {
        const e = new Error(resp.status === 401 ? KEY_NEEDED : `${resp.status}: ${await errorMessage(resp)}`);
        e.status = resp.status;
        throw e;
      }
      for await (const data of sse(resp)) {
        if (data === "[DONE]") break;
        let chunk;
        try { chunk = JSON.parse(data); } catch { continue; }
        if (chunk.error) throw new Error(chunk.error.message || "the server failed");
        if (chunk.usage) r.usage = chunk.usage;
        if (chunk.timings) r.timings = chunk.timings;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        const d = choice.delta || {};
        if (typeof d.content === "string" && d.content) {
          if (!r.tFirst) r.tFirst = performance.now();
          r.text += d.content;
          r.pieces++;
          if (!frame) frame = requestAnimationFrame(render);
        }
        if (Array.isArray(d.tool_calls)) mergeToolCalls(calls, d.tool_calls);
        if (choice.finish_reason) r.finish = choice.finish_reason;
      }
    } catch (e) {
      if (e.name === "AbortError") r.stopped = true;
      else error = e;
    }
    r.tEnd = performance.now();
    r.live = false;
    controller = null;
    setBusy(false);
    if (myEpoch !== epoch) return; // "New chat" was pressed meanwhile
    render();
    art.removeAttribute("aria-busy");

    if (error) {
      art.classList.add("error");
      out.append(h("p", null, error.name === "TypeError" ? `Cannot reach the server (${error.message}).` : error.message));
      const retry = h("button", { type: "button", class: "retry" }, "Retry");
      retry.addEventListener("click", () => { retry.remove(); generate(); });
      art.append(retry);
      setStatus(error.message, true);
      if (error.status === 401) askForKey();
      return;
    }
    statsEl.textContent = stats(r);
    if (r.stopped) {
      art.classList.add("stopped");
      setStatus("Stopped.");
    } else setStatus("");
    // A stopped reply may hold half a call (GLM-4 streams arguments in pieces): dropped.
    const toolCalls = r.stopped ? [] : calls.filter(Boolean);
    for (const c of toolCalls) if (!c.id) c.id = uid("call");
    if (r.text || toolCalls.length) {
      const msg = { role: "assistant", content: r.text || (toolCalls.length ? null : "") };
      if (toolCalls.length) msg.tool_calls = toolCalls;
      history.push(msg);
    }
    if (toolCalls.length) showToolCalls(out, toolCalls);
  }

  // ------------------------------------------------------------ tool calls

  function closePendingTools(note) {
    if (!pendingTools) return;
    for (const c of pendingTools.cards) {
      if (!c.done) { c.ta.disabled = true; c.btn.disabled = true; c.note.textContent = note; }
    }
    pendingTools = null;
  }

  function showToolCalls(out, calls) {
    const group = { cards: [] };
    for (const call of calls) {
      const name = call.function.name || "(unnamed)";
      let args = call.function.arguments;
      try { args = JSON.stringify(JSON.parse(args || "{}"), null, 2); } catch { /* shown as sent */ }
      const id = uid("tool-result");
      const ta = h("textarea", { id, rows: 3, class: "mono", spellcheck: "false", placeholder: "What the tool returned (text or JSON); Ctrl+Enter sends" });
      const btn = h("button", { type: "button", class: "primary" }, "Send result");
      const note = h("span", { class: "note" });
      const card = { call, ta, btn, note, done: false, result: "" };
      const submit = () => submitToolResult(group, card);
      btn.addEventListener("click", submit);
      ta.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.isComposing) { e.preventDefault(); submit(); }
      });
      group.cards.push(card);
      out.append(h("details", { class: "tool-call", open: true },
        h("summary", null, "Tool call ", h("code", null, name)),
        h("div", { class: "inner" },
          h("pre", { "aria-label": "Arguments" }, h("code", null, args)),
          h("label", { for: id }, `Result of ${name}`), ta,
          h("div", { class: "actions" }, btn, note))));
    }
    pendingTools = group;
    group.cards[0].ta.focus();
  }

  function submitToolResult(group, card) {
    if (controller || card.done) return;
    card.result = card.ta.value;
    card.done = true;
    card.ta.readOnly = true;
    card.btn.disabled = true;
    card.note.textContent = "Sent";
    const waiting = group.cards.filter((c) => !c.done);
    if (waiting.length) {
      for (const c of group.cards) if (c.done) c.note.textContent = `Sent once ${waiting.length} more result(s) are in`;
      waiting[0].ta.focus();
      return;
    }
    for (const c of group.cards) {
      history.push({ role: "tool", tool_call_id: c.call.id, content: c.result });
      c.note.textContent = "Sent";
    }
    pendingTools = null;
    generate();
  }

  // ------------------------------------------------------------ input

  function send() {
    const content = els.input.value;
    if (!content.trim() || controller) return;
    try { requestOptions(); } catch (e) {
      setStatus(e.message, true);
      showSettings(true);
      return;
    }
    closePendingTools("Not answered");
    history.push({ role: "user", content });
    addMessage("user", "You").body.textContent = content;
    els.input.value = "";
    autosize();
    generate();
  }

  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = Math.min(els.input.scrollHeight + 2, window.innerHeight * 0.4) + "px";
  }

  // An IME (Chinese, Japanese, ...) uses Enter to confirm its candidate: that Enter must not send.
  let composing = false;
  els.input.addEventListener("compositionstart", () => { composing = true; });
  els.input.addEventListener("compositionend", () => { composing = false; });
  els.input.addEventListener("blur", () => { composing = false; });
  els.input.addEventListener("input", autosize);
  els.input.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey || e.altKey) return;
    if (e.isComposing || e.keyCode === 229 || composing) return;
    e.preventDefault();
    send();
  });
  els.form.addEventListener("submit", (e) => { e.preventDefault(); send(); });
  els.stop.addEventListener("click", stop);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && controller && !e.isComposing) { e.preventDefault(); stop(); }
  });
  els.newChat.addEventListener("click", () => {
    stop();
    epoch++;
    closePendingTools("");
    history = [];
    els.messages.replaceChildren(els.empty);
    els.empty.hidden = false;
    setStatus("New chat.");
    els.input.focus();
  });

  // For tests and the curious: the Markdown renderer on its own.
  window.glmtoolChat = {
    markdown(src) { const d = h("div"); renderMarkdown(src, d); return d; },
    history: () => JSON.parse(JSON.stringify(history)),
  };

  setBusy(false);
  loadModel();
  els.input.focus();
})();
