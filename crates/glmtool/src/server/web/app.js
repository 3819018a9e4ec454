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
    toggleChats: $("toggle-chats"), chats: $("chats"), chatList: $("chat-list"),
    noChats: $("no-chats"), exportChat: $("export-chat"),
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
  /** How often a request that has no token yet asks /health whether it waits for a slot. */
  const WAIT_POLL_MS = 1000;

  function setStatus(text, isError) {
    els.status.textContent = text || "";
    els.status.classList.toggle("error", !!isError);
  }

  // ------------------------------------------------------------ Markdown (safe subset)
  //
  // Bounded on any input. Quotes and lists nest at most MAX_NEST deep (deeper markers stay
  // text) and emphasis at most MAX_INLINE deep, so neither the call stack nor the page grows
  // with the input. Each nesting level looks at a line a bounded number of times, and inline
  // closers are found in position lists walked forward only (never by scanning the rest of the
  // text again from each opener), so a render takes time linear in the text. While a reply
  // streams, complete blocks are rendered once and kept (`markdownStream`).

  const MAX_NEST = 12;
  const MAX_INLINE = 6;

  const FENCE_OPEN = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)([\s\S]*)$/;
  /** A fence's opening line: [, indent, fence, language], or null. Like CommonMark, a backtick
   * fence's info string holds no backtick (```a`b`` is inline code). */
  function fence(l) {
    const m = FENCE_OPEN.exec(l);
    return m && !(m[2][0] === "`" && m[4].includes("`")) ? m : null;
  }
  const HEADING = /^ {0,3}(#{1,6})\s+([\s\S]*)$/;
  const HR = /^ {0,3}([-*_])( *\1){2,} *$/;
  const QUOTE = /^ {0,3}> ?/;
  const LIST = /^(\s*)([-*+]|\d{1,9}[.)])(\s+|$)([\s\S]*)$/;
  const TABLE_SEP_CELL = /^:?-+:?$/;
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
  /** Appends nodes one by one (a spread of 10^5 nodes overflows the call stack). */
  function appendAll(parent, nodes) {
    for (const n of Array.from(nodes)) parent.append(n);
    return parent;
  }

  /** A heading line's level and text (a closing run of #s removed), or null. */
  function heading(l) {
    const m = HEADING.exec(l);
    if (!m) return null;
    let t = m[2].trimEnd(), end = t.length;
    while (end > 0 && t[end - 1] === "#") end--;
    if (end === 0 || /\s/.test(t[end - 1])) t = t.slice(0, end).trimEnd();
    return { level: m[1].length, text: t };
  }

  /** The cells of a table row: outer pipes dropped, `\|` kept as a pipe. */
  function cells(l) {
    let s = l.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
    return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
  }
  const isTable = (lines, i) =>
    lines[i].includes("|") && i + 1 < lines.length && lines[i + 1].includes("-") &&
    cells(lines[i + 1]).every((c) => TABLE_SEP_CELL.test(c));

  /**
   * Whether lines[i] starts a block that ends a paragraph. Reads lines[i] and lines[i + 1] (a
   * table's separator), never further: `markdownStream` relies on that.
   */
  function startsBlock(lines, i, depth) {
    const l = lines[i];
    if (fence(l) || heading(l) || HR.test(l) || isTable(lines, i)) return true;
    if (depth >= MAX_NEST) return false;
    if (QUOTE.test(l)) return true;
    const m = LIST.exec(l);
    return !!m && m[4] !== "" && (/^[-*+]$/.test(m[2]) || /^1[.)]$/.test(m[2]));
  }

  function renderMarkdown(src, into) {
    into.replaceChildren();
    markdownStream(into).update(src, true);
  }

  /**
   * Renders a growing Markdown text into `into`. A top-level block is settled once the lines
   * after it that decide where it ends (the first line of the next block and the one after:
   * see `startsBlock`) are complete; settled blocks are rendered once and kept, the rest again
   * at each update. `update(src, true)` is the last one: later calls do nothing.
   */
  function markdownStream(into) {
    let from = 0; // where the unsettled part of the source starts
    let kept = 0; // the children of `into` rendered from the settled part
    let done = false;
    return {
      update(src, final) {
        if (done) return;
        done = !!final;
        const raw = src.slice(from);
        const lines = raw.replace(/\r\n?/g, "\n").split("\n");
        const nodes = [];
        let settledLines = 0, settledNodes = 0;
        for (let i = 0; i < lines.length;) {
          if (blank(lines[i])) { i++; continue; }
          const [node, end] = block(lines, i, 0);
          nodes.push(node);
          let next = end;
          while (next < lines.length && blank(lines[next])) next++;
          // The block was decided by lines up to next + 1; the last line may still grow.
          if (next + 1 < lines.length - 1) { settledLines = next; settledNodes = nodes.length; }
          i = next;
        }
        while (into.childNodes.length > kept) into.lastChild.remove();
        appendAll(into, nodes);
        if (!done && settledNodes) {
          kept += settledNodes;
          from += lineStart(raw, settledLines);
        }
      },
    };
  }

  /** Where line `n` of `raw` starts (lines end at \n, \r\n or \r). */
  function lineStart(raw, n) {
    let i = 0;
    for (let line = 0; line < n;) {
      const c = raw.charCodeAt(i++);
      if (c === 10) line++;
      else if (c === 13) { if (raw.charCodeAt(i) === 10) i++; line++; }
    }
    return i;
  }

  function blocks(lines, depth) {
    const out = [];
    for (let i = 0; i < lines.length;) {
      if (blank(lines[i])) { i++; continue; }
      const [node, next] = block(lines, i, depth);
      out.push(node);
      i = next;
    }
    return out;
  }

  /**
   * The block starting at lines[i] (not blank) inside `depth` quotes and lists: [its element,
   * the index of the line after it].
   */
  function block(lines, i, depth) {
    const line = lines[i];
    const nest = depth < MAX_NEST;
    let m, hd;
    if ((m = fence(line))) {
      const [, indent, marks, lang] = m;
      const body = [];
      for (i++; i < lines.length; i++) {
        const t = lines[i].trim();
        if (t.length >= marks.length && t === marks[0].repeat(t.length)) { i++; break; }
        body.push(dedent(lines[i], indent.length));
      }
      return [codeBlock(body.join("\n"), lang), i];
    }
    if ((hd = heading(line))) {
      // Reply headings sit below the page's own h1/h2.
      return [inline(hd.text, h("h" + Math.min(hd.level + 2, 6), { class: "h" + hd.level })), i + 1];
    }
    if (HR.test(line)) return [h("hr"), i + 1];
    if (nest && QUOTE.test(line)) {
      const inner = [];
      for (; i < lines.length && !blank(lines[i]) && QUOTE.test(lines[i]); i++) inner.push(lines[i].replace(QUOTE, ""));
      return [appendAll(h("blockquote"), blocks(inner, depth + 1)), i];
    }
    if (isTable(lines, i)) return parseTable(lines, i);
    if (nest && (m = LIST.exec(line)) && m[4] !== "") return parseList(lines, i, depth);
    const para = [line.trim()];
    for (i++; i < lines.length && !blank(lines[i]) && !startsBlock(lines, i, depth); i++) para.push(lines[i].trim());
    return [inline(para.join("\n"), h("p")), i];
  }

  function parseList(lines, i, depth) {
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
        // Blank lines belong to the list when what follows them does (the first line after
        // them is the next block's first line if not: see `markdownStream`).
        let j = i + 1;
        while (j < lines.length && blank(lines[j])) j++;
        const n = lines[j];
        const mm = n === undefined ? null : LIST.exec(n);
        if (n === undefined || !(indentOf(n) > base + 1 || (mm && mm[1].length <= base + 1 && /\d/.test(mm[2]) === ordered))) break;
        for (; i < j; i++) item.push("");
        continue;
      }
      if (indentOf(line) > base) { item.push(dedent(line, item.indent)); i++; continue; }
      if (!startsBlock(lines, i, depth) && item[item.length - 1] !== "") { item.push(line.trim()); i++; continue; }
      break;
    }
    for (const it of items) {
      // A one-paragraph item is rendered without its <p>, like tight Markdown lists.
      const kids = blocks(it, depth + 1);
      const li = h("li");
      if (kids.length && kids[0].tagName === "P") appendAll(li, kids.shift().childNodes);
      list.append(appendAll(li, kids));
    }
    return [list, i];
  }

  function parseTable(lines, i) {
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

  // Inline syntax. At each position the first of these that matches wins, scanning left to
  // right: code span; math ($$…$$, \(…\), \[…\], $…$ but not "$5 and $6"), kept verbatim as
  // text; a backslash escape; **bold**, __bold__, ~~strike~~, *italic*, _italic_;
  // [label](url "title"); <url> or a bare http(s) URL. Everything else is text.

  const ESCAPABLE = new Set("\\`*_{}[]()#+-.!|~<>$");
  const URL_CHAR = /[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]/;
  const URL_END = /[A-Za-z0-9\-_~/#=&%+]/;
  const isSpace = (c) => c !== undefined && /\s/.test(c);
  const nonSpace = (c) => c !== undefined && !/\s/.test(c);
  const isWord = (c) => c !== undefined && /\w/.test(c);

  const safeHref = (u) => (/^(https?:\/\/|mailto:)/i.test(u) ? u : null);

  /**
   * Finders of positions in `s`: each lists, on first use, the positions where its test holds,
   * and answers "the first one at or after `from`" (-1: none) by walking that list forward, so
   * within one `inline` call the queries of one finder must not go backwards.
   */
  function finders(s) {
    const at = (test) => {
      let list = null, k = 0;
      return (from) => {
        if (list === null) { list = []; for (let q = 0; q < s.length; q++) if (test(q)) list.push(q); }
        while (k < list.length && list[k] < from) k++;
        return k < list.length ? list[k] : -1;
      };
    };
    const pair = (q, c) => s[q] === c && s[q + 1] === c;
    let runs = null;
    const runPtr = new Map();
    return {
      newline: at((q) => s[q] === "\n"),
      dollar: at((q) => s[q] === "$"),
      dollars: at((q) => pair(q, "$")),
      mathParen: at((q) => s[q] === "\\" && s[q + 1] === ")"),
      mathBracket: at((q) => s[q] === "\\" && s[q + 1] === "]"),
      bold: at((q) => pair(q, "*") && nonSpace(s[q - 1])),
      italic: at((q) => s[q] === "*" && nonSpace(s[q - 1]) && s[q - 1] !== "*" && s[q + 1] !== "*"),
      boldU: at((q) => pair(q, "_") && nonSpace(s[q - 1]) && !isWord(s[q + 2])),
      italicU: at((q) => s[q] === "_" && nonSpace(s[q - 1]) && s[q - 1] !== "_" && !isWord(s[q + 1])),
      strike: at((q) => pair(q, "~") && nonSpace(s[q - 1])),
      bracket: at((q) => s[q] === "]"),
      /** The next run of exactly `len` backticks starting at or after `from`. */
      ticks(len, from) {
        if (runs === null) {
          runs = new Map();
          for (let q = 0; q < s.length;) {
            if (s[q] !== "`") { q++; continue; }
            let e = q;
            while (s[e] === "`") e++;
            if (!runs.has(e - q)) runs.set(e - q, []);
            runs.get(e - q).push(q);
            q = e;
          }
        }
        const list = runs.get(len) || [];
        let k = runPtr.get(len) || 0;
        while (k < list.length && list[k] < from) k++;
        runPtr.set(len, k);
        return k < list.length ? list[k] : -1;
      },
    };
  }

  /** The destination of a link, `s[i]` being just after "](": {url, end} or null. */
  function linkDest(s, i) {
    const urlChar = (k) => k < s.length && !/[\s()<>]/.test(s[k]);
    while (isSpace(s[i])) i++;
    if (s[i] === "<") i++;
    const u0 = i;
    while (urlChar(i)) i++;
    if (i === u0) return null;
    while (s[i] === "(") { // balanced parentheses, one level: /wiki/Foo_(bar)
      let k = i + 1;
      while (k < s.length && !/[\s()]/.test(s[k])) k++;
      if (s[k] !== ")") return null;
      for (i = k + 1; urlChar(i);) i++;
    }
    const url = s.slice(u0, i);
    if (s[i] === ">") i++;
    let k = i;
    while (isSpace(s[k])) k++;
    if (k > i && s[k] === '"') { // a title, dropped
      let e = k + 1;
      while (e < s.length && s[e] !== '"' && s[e] !== "\n") e++;
      if (s[e] === '"') i = e + 1;
    }
    while (isSpace(s[i])) i++;
    return s[i] === ")" ? { url, end: i + 1 } : null;
  }

  /** A bare or <…> URL at s[p]: [url, end] or null. */
  function bareUrl(s, p) {
    const u0 = s[p] === "<" ? p + 1 : p;
    const scheme = /^https?:\/\//.exec(s.slice(u0, u0 + 8));
    if (!scheme) return null;
    const body = u0 + scheme[0].length;
    let e = body;
    while (e < s.length && URL_CHAR.test(s[e])) e++;
    while (e > body && !URL_END.test(s[e - 1])) e--; // no trailing punctuation
    if (e === body) return null;
    return [s.slice(u0, e), s[e] === ">" ? e + 1 : e];
  }

  function text(parent, s) {
    s.split("\n").forEach((part, k) => {
      if (k) parent.append(h("br"));
      if (part) parent.append(part);
    });
  }

  function link(href, label) {
    return h("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, label);
  }

  /**
   * Appends the inline Markdown of `s` to `parent` (as elements and text nodes); returns it.
   * `depth`: how many emphasis elements this is inside (at MAX_INLINE, delimiters are text).
   */
  function inline(s, parent, depth = 0) {
    const find = finders(s);
    const dests = new Map(); // link destinations by the position of their "]"
    const emph = depth < MAX_INLINE;
    let pending = ""; // text not yet appended, then s[last..p)
    let last = 0;
    let p = 0;
    const put = (start, end, node) => {
      pending += s.slice(last, start);
      if (pending) text(parent, pending);
      pending = "";
      parent.append(node);
      last = p = end;
    };
    const nested = (a, b, tag) => inline(s.slice(a, b), h(tag), depth + 1);
    while (p < s.length) {
      const c = s[p], c1 = s[p + 1];
      let q;
      if (c === "`") {
        let k = p;
        while (s[k] === "`") k++;
        const n = k - p;
        if ((q = find.ticks(n, k)) < 0) { p = k; continue; } // no closing run: text
        let code = s.slice(k, q).replace(/\n/g, " ");
        if (code.length > 2 && code[0] === " " && code[code.length - 1] === " " && /[^ ]/.test(code)) code = code.slice(1, -1);
        put(p, q + n, h("code", null, code));
        continue;
      }
      if (c === "$" && c1 === "$" && (q = find.dollars(p + 3)) >= 0) {
        put(p, q + 2, math(s.slice(p, q + 2)));
        continue;
      }
      if (c === "\\" && (c1 === "(" || c1 === "[") && (q = (c1 === "(" ? find.mathParen : find.mathBracket)(p + 3)) >= 0) {
        put(p, q + 2, math(s.slice(p, q + 2)));
        continue;
      }
      if (c === "$" && nonSpace(c1) && c1 !== "$" && (q = find.dollar(p + 1)) >= 0) {
        const nl = find.newline(p);
        if ((nl < 0 || nl > q) && nonSpace(s[q - 1]) && s[q - 1] !== "\\" && !/\d/.test(s[q + 1] || "")) {
          put(p, q + 1, math(s.slice(p, q + 1)));
          continue;
        }
      }
      if (c === "\\" && ESCAPABLE.has(c1)) {
        pending += s.slice(last, p) + c1;
        last = p = p + 2;
        continue;
      }
      if (emph && c === "*") {
        if (c1 === "*" && nonSpace(s[p + 2]) && (q = find.bold(p + 3)) >= 0) { put(p, q + 2, nested(p + 2, q, "strong")); continue; }
        if (nonSpace(c1) && c1 !== "*" && (q = find.italic(p + 2)) >= 0) { put(p, q + 1, nested(p + 1, q, "em")); continue; }
      }
      if (emph && c === "_" && !isWord(s[p - 1]) && s[p - 1] !== "\\") {
        if (c1 === "_" && nonSpace(s[p + 2]) && (q = find.boldU(p + 3)) >= 0) { put(p, q + 2, nested(p + 2, q, "strong")); continue; }
        if (nonSpace(c1) && c1 !== "_" && (q = find.italicU(p + 2)) >= 0) { put(p, q + 1, nested(p + 1, q, "em")); continue; }
      }
      if (emph && c === "~" && c1 === "~" && nonSpace(s[p + 2]) && (q = find.strike(p + 3)) >= 0) {
        put(p, q + 2, nested(p + 2, q, "del"));
        continue;
      }
      if (c === "[" && (q = find.bracket(p + 1)) > p + 1 && s[q + 1] === "(") {
        const nl = find.newline(p);
        if (nl < 0 || nl > q) {
          if (!dests.has(q)) dests.set(q, linkDest(s, q + 2));
          const d = dests.get(q);
          if (d) {
            const href = safeHref(d.url);
            if (href) put(p, d.end, link(href, s.slice(p + 1, q)));
            else p = d.end; // javascript:, data:, relative paths...: shown as text
            continue;
          }
        }
      }
      if (c === "<" || c === "h") {
        const u = bareUrl(s, p);
        if (u) { put(p, u[1], link(u[0], u[0])); continue; }
      }
      p++;
    }
    pending += s.slice(last);
    if (pending) text(parent, pending);
    return parent;
  }

  function math(s) {
    const span = h("span", { class: "math" });
    text(span, s);
    return span;
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

  // The side panels: open on wide screens until closed by hand (a choice kept in the browser).
  function panel(key, box, button) {
    const show = (open, remember) => {
      box.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      if (remember) store.set(key, open ? "1" : "0");
    };
    const saved = store.get(key);
    show(saved ? saved === "1" : window.innerWidth >= 1000, false);
    button.addEventListener("click", () => show(box.hidden, true));
    return show;
  }
  const showSettings = panel("settings_open", els.settings, els.toggle);
  panel("chats_open", els.chats, els.toggleChats);

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

  // The open conversation: {id, title, named (renamed by hand), created, updated, messages}.
  // `messages` are OpenAI messages as sent, without the system prompt (added at each request);
  // an assistant message may carry `view: {stats, stopped}` (the line under it), never sent.
  let chat = blankChat();
  let controller = null; // the running request's AbortController
  let pendingTools = null; // the tool calls of the last reply, waiting for results
  let epoch = 0; // bumped when another conversation opens: an older reply does not touch it

  function blankChat() {
    const now = Date.now();
    const id = now.toString(36) + "-" + Math.random().toString(36).slice(2, 8);
    return { id, title: "", named: false, created: now, updated: now, messages: [] };
  }
  /** A message as the API takes it. */
  const apiMessage = ({ view, ...m }) => m;

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
    messages.push(...chat.messages.map(apiMessage));
    const body = { messages, stream: true, stream_options: { include_usage: true }, ...opts };
    if (modelName) body.model = modelName;

    const { art, body: out } = addMessage("assistant", "Assistant");
    const conv = chat;
    art.setAttribute("aria-busy", "true");
    const statsEl = h("p", { class: "stats" });
    art.append(statsEl);
    const r = { t0: performance.now(), tFirst: 0, tEnd: 0, pieces: 0, text: "", usage: null, timings: null, finish: null, stopped: false, live: true };
    const myEpoch = epoch;
    const calls = [];
    let frame = 0; // the render queued for the next animation frame, if any
    const md = markdownStream(out); // complete blocks are rendered once, the rest each frame
    const cursor = h("span", { class: "cursor", "aria-hidden": "true" });
    const render = () => {
      // The final render cancels a queued one: it would erase what is appended after it.
      if (frame) cancelAnimationFrame(frame);
      frame = 0;
      const stick = nearBottom();
      cursor.remove();
      try {
        md.update(r.text, !r.live);
      } catch (e) {
        // Never lose a reply to a renderer bug: show it as plain text.
        console.error("Markdown renderer:", e);
        out.replaceChildren(h("p", { class: "plain" }, r.text));
      }
      const lastBlock = out.lastElementChild;
      if (r.live && lastBlock && /^(P|H\d)$/.test(lastBlock.tagName)) lastBlock.append(cursor);
      else if (r.live) out.append(cursor);
      if (stick) scrollDown();
    };
    render();

    controller = new AbortController();
    setBusy(true);
    const GENERATING = "Generating… (Esc or Stop to stop)";
    setStatus(GENERATING);
    // Until the first token: when every slot of the server is busy and requests wait for one
    // (its /health), say so instead of leaving the reply blank.
    let waiting = false;
    const waitTimer = setInterval(async () => {
      if (r.tFirst || !r.live) return;
      try {
        const hv = await (await fetch("/health")).json();
        if (r.tFirst || !r.live || myEpoch !== epoch) return;
        if (hv.slots_idle === 0 && hv.requests_deferred > 0) {
          const n = hv.slots_processing;
          waiting = true;
          setStatus(`Waiting for a free slot: the server is answering ${n} other request${n === 1 ? "" : "s"}… (Esc or Stop to stop)`);
        }
      } catch { /* no /health: nothing to say */ }
    }, WAIT_POLL_MS);
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
          if (waiting) { waiting = false; setStatus(GENERATING); }
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
    clearInterval(waitTimer);
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
      msg.view = { stats: statsEl.textContent, stopped: r.stopped };
      conv.messages.push(msg);
      addActions(art, conv, conv.messages.length - 1);
      persist();
    }
    if (toolCalls.length) showToolCalls(out, toolCalls, { pending: true, focus: true });
  }

  // ------------------------------------------------------------ tool calls

  function closePendingTools(note) {
    if (!pendingTools) return;
    for (const c of pendingTools.cards) {
      if (!c.done) { c.ta.disabled = true; c.btn.disabled = true; c.note.textContent = note; }
    }
    pendingTools = null;
  }

  /**
   * Cards for a reply's tool calls. `results` (id → content): the calls were answered (a saved
   * conversation); else `pending`: they wait for results, or were left unanswered.
   */
  function showToolCalls(out, calls, { results, pending, focus }) {
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
      if (results) {
        ta.value = results.get(call.id) ?? "";
        ta.readOnly = true;
        btn.disabled = true;
        note.textContent = "Sent";
        card.done = true;
      } else if (!pending) {
        ta.disabled = true;
        btn.disabled = true;
        note.textContent = "Not answered";
      }
      out.append(h("details", { class: "tool-call", open: true },
        h("summary", null, "Tool call ", h("code", null, name)),
        h("div", { class: "inner" },
          h("pre", { "aria-label": "Arguments" }, h("code", null, args)),
          h("label", { for: id }, `Result of ${name}`), ta,
          h("div", { class: "actions" }, btn, note))));
    }
    if (!pending || results) return;
    pendingTools = group;
    if (focus) group.cards[0].ta.focus();
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
      chat.messages.push({ role: "tool", tool_call_id: c.call.id, content: c.result });
      c.note.textContent = "Sent";
    }
    pendingTools = null;
    persist();
    generate();
  }

  // ------------------------------------------------------------ saved conversations
  //
  // In this origin's localStorage (about 5 MB): "glmtool.chats" lists {id, title, updated},
  // newest first; "glmtool.chat.<id>" holds one conversation; "glmtool.current" the open one.

  const saved = {
    list() {
      try {
        const v = JSON.parse(store.get("chats") || "[]");
        return Array.isArray(v) ? v.filter((e) => e && typeof e.id === "string") : [];
      } catch { return []; }
    },
    load(id) {
      try {
        const c = JSON.parse(store.get("chat." + id) || "null");
        if (!c || typeof c.id !== "string" || !Array.isArray(c.messages)) return null;
        c.messages = c.messages.filter((m) => m && typeof m === "object" && typeof m.role === "string");
        return c;
      } catch { return null; }
    },
    /** Writes a conversation and its entry in the list; false when storage is full or off. */
    save(c) {
      try {
        localStorage.setItem("glmtool.chat." + c.id, JSON.stringify(c));
        const list = saved.list().filter((e) => e.id !== c.id);
        list.push({ id: c.id, title: c.title, updated: c.updated });
        list.sort((a, b) => b.updated - a.updated);
        localStorage.setItem("glmtool.chats", JSON.stringify(list));
        return true;
      } catch (e) {
        setStatus(`This conversation could not be saved (${e.name}): delete old ones under Chats.`, true);
        return false;
      }
    },
    remove(id) {
      store.set("chat." + id, null);
      const list = saved.list().filter((e) => e.id !== id);
      store.set("chats", list.length ? JSON.stringify(list) : null);
    },
  };

  /** A conversation's name: given by hand, or its first line. */
  function titleOf(c) {
    if (c.named && c.title) return c.title;
    const first = c.messages.find((m) => m.role === "user");
    const t = first ? String(first.content).trim().split("\n")[0] : "";
    return t.length > 60 ? t.slice(0, 59) + "…" : t || "New chat";
  }

  /** Saves the open conversation (once it has a message) and redraws the list. */
  function persist() {
    if (!chat.messages.length) return;
    chat.updated = Date.now();
    chat.title = titleOf(chat);
    saved.save(chat);
    renderChatList();
  }

  /** Makes `c` the open conversation and shows it. */
  function openChat(c) {
    stop();
    epoch++;
    closePendingTools("");
    chat = c;
    store.set("current", c.id);
    showMessages();
    renderChatList();
  }

  /** Puts the open conversation's messages on the page. */
  function showMessages() {
    pendingTools = null;
    els.messages.replaceChildren(els.empty);
    els.empty.hidden = chat.messages.length > 0;
    const ms = chat.messages;
    const results = new Map(ms.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m.content]));
    ms.forEach((m, k) => {
      if (m.role === "user") { showUser(k); return; }
      if (m.role !== "assistant") return; // tool results are shown in their call's card
      const { art, body } = addMessage("assistant", "Assistant");
      if (m.content) {
        try { renderMarkdown(String(m.content), body); } catch (e) {
          console.error("Markdown renderer:", e);
          body.replaceChildren(h("p", { class: "plain" }, String(m.content)));
        }
      }
      const calls = Array.isArray(m.tool_calls) ? m.tool_calls : [];
      if (calls.length) {
        const answered = calls.every((c) => results.has(c.id));
        showToolCalls(body, calls, { results: answered ? results : null, pending: k === ms.length - 1 });
      }
      art.append(h("p", { class: "stats" }, (m.view && m.view.stats) || ""));
      if (m.view && m.view.stopped) art.classList.add("stopped");
      addActions(art, chat, k);
    });
    scrollDown();
  }

  /** Shows the user message chat.messages[k]. */
  function showUser(k) {
    const { art, body } = addMessage("user", "You");
    body.textContent = String(chat.messages[k].content ?? "");
    addActions(art, chat, k);
  }

  /** Copy for every message; Edit for the user's; Regenerate for the last reply (see CSS). */
  function addActions(art, c, k) {
    const m = c.messages[k];
    const btn = (cls, label, aria, fn) => {
      const b = h("button", { type: "button", class: cls, "aria-label": aria }, label);
      b.addEventListener("click", () => { if (chat === c) fn(b); });
      return b;
    };
    const who = m.role === "user" ? "your message" : "this reply";
    const bar = h("div", { class: "msg-actions" },
      btn("copy-msg", "Copy", `Copy ${who}`, (b) =>
        copyText(m.content != null ? String(m.content) : JSON.stringify(m.tool_calls || [], null, 2), b)));
    if (m.role === "user") bar.append(btn("edit", "Edit", "Edit and send again", () => editUser(art, k)));
    else bar.append(btn("regen", "Regenerate", "Write this reply again", regenerate));
    art.append(bar);
  }

  /** Replaces the last reply (everything after the last user message) by a new one. */
  function regenerate() {
    if (controller) return;
    let u = chat.messages.length - 1;
    while (u >= 0 && chat.messages[u].role !== "user") u--;
    if (u < 0) return;
    chat.messages.length = u + 1;
    showMessages();
    persist();
    generate();
  }

  /** Edits the user message chat.messages[k] in place; sending drops everything after it. */
  function editUser(art, k) {
    if (controller || art.querySelector(".edit-box")) return;
    const c = chat;
    const body = art.querySelector(".body"), bar = art.querySelector(".msg-actions");
    const ta = h("textarea", { class: "edit", rows: 3, "aria-label": "Edit your message" });
    ta.value = c.messages[k].content;
    const sendBtn = h("button", { type: "button", class: "primary" }, "Send");
    const cancel = h("button", { type: "button" }, "Cancel");
    const box = h("div", { class: "edit-box" }, ta, h("div", { class: "edit-actions" }, sendBtn, cancel));
    body.hidden = bar.hidden = true;
    body.after(box);
    ta.focus();
    const close = () => { box.remove(); body.hidden = bar.hidden = false; };
    const submit = () => {
      if (!ta.value.trim() || controller || chat !== c) return;
      closePendingTools("");
      c.messages.length = k;
      c.messages.push({ role: "user", content: ta.value });
      showMessages();
      persist();
      generate();
    };
    sendBtn.addEventListener("click", submit);
    cancel.addEventListener("click", close);
    ta.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { e.preventDefault(); close(); return; }
      if (e.key !== "Enter" || e.shiftKey || e.altKey || e.isComposing || e.keyCode === 229) return;
      e.preventDefault();
      submit();
    });
  }

  /** The list of saved conversations, the open one marked. */
  function renderChatList() {
    const list = saved.list();
    const items = list.map((e) => {
      const title = e.title || "New chat";
      const current = e.id === chat.id;
      const li = h("li", { class: current ? "current" : null, "data-id": e.id });
      const open = h("button", { type: "button", class: "open", title, "aria-current": current ? "true" : null }, title);
      open.addEventListener("click", () => {
        if (e.id === chat.id) return;
        const c = saved.load(e.id);
        if (c) { openChat(c); setStatus(""); } else { setStatus("That conversation is gone.", true); renderChatList(); }
      });
      const rename = h("button", { type: "button", class: "icon rename", title: "Rename", "aria-label": `Rename “${title}”` }, "✎");
      rename.addEventListener("click", () => startRename(li, e));
      const del = h("button", { type: "button", class: "icon delete", title: "Delete", "aria-label": `Delete “${title}”` }, "✕");
      del.addEventListener("click", () => {
        // Two clicks: the first arms the button for a few seconds.
        if (!del.classList.contains("armed")) {
          del.classList.add("armed");
          del.textContent = "Delete?";
          del.setAttribute("aria-label", `Delete “${title}”: press again to confirm`);
          setTimeout(() => { if (del.isConnected) renderChatList(); }, 4000);
          return;
        }
        saved.remove(e.id);
        if (e.id === chat.id) openChat(blankChat());
        else renderChatList();
        setStatus(`Deleted “${title}”.`);
      });
      return appendAll(li, [open, rename, del]);
    });
    els.chatList.replaceChildren();
    appendAll(els.chatList, items);
    els.noChats.hidden = items.length > 0;
  }

  function startRename(li, e) {
    const input = h("input", { type: "text", class: "rename-input", "aria-label": "New name", maxlength: "200" });
    input.value = e.title || "";
    li.replaceChildren(input);
    input.focus();
    input.select();
    let finished = false;
    const finish = (keep) => {
      if (finished) return;
      finished = true;
      const title = input.value.trim();
      const c = keep && title ? (e.id === chat.id ? chat : saved.load(e.id)) : null;
      if (c) {
        c.title = title;
        c.named = true;
        saved.save(c);
      }
      renderChatList();
    };
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.isComposing) { ev.preventDefault(); finish(true); }
      else if (ev.key === "Escape") { ev.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", () => finish(true));
  }

  /** The open conversation as a JSON document. */
  function exportData() {
    return {
      format: "glmtool-chat", version: 1, title: titleOf(chat), model: modelName || null,
      system: els.system.value.trim() || null,
      created: new Date(chat.created).toISOString(), updated: new Date(chat.updated).toISOString(),
      messages: chat.messages,
    };
  }

  function downloadChat() {
    if (!chat.messages.length) { setStatus("Nothing to export yet."); return; }
    const data = exportData();
    const blob = new Blob([JSON.stringify(data, null, 2) + "\n"], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const name = data.title.replace(/[\\/:*?"<>|\u0000-\u001f]+/g, "_").slice(0, 80) || "chat";
    const a = h("a", { href: url, download: name + ".json", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    setStatus(`Exported “${data.title}”.`);
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
    chat.messages.push({ role: "user", content });
    showUser(chat.messages.length - 1);
    persist();
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
    openChat(blankChat());
    setStatus("New chat.");
    els.input.focus();
  });
  els.exportChat.addEventListener("click", downloadChat);

  // For tests and the curious: the Markdown renderer on its own.
  window.glmtoolChat = {
    markdown(src) { const d = h("div"); renderMarkdown(src, d); return d; },
    /** How deep quotes and lists, and emphasis, may nest (deeper markers are text). */
    limits: { nest: MAX_NEST, inline: MAX_INLINE },
    /** The streaming renderer: `update(text, final)` returns the element it renders into. */
    markdownStream() {
      const el = h("div"), md = markdownStream(el);
      return { el, update(src, final) { md.update(src, final); return el; } };
    },
    history: () => JSON.parse(JSON.stringify(chat.messages.map(apiMessage))),
    /** The open conversation as "Export" writes it. */
    exported: () => exportData(),
  };

  // The conversation open before a reload (or a new one).
  const current = store.get("current");
  try {
    openChat((current && saved.load(current)) || blankChat());
  } catch (e) {
    console.error("saved conversation:", e);
    openChat(blankChat());
    setStatus("The last conversation could not be shown; a new one is open.", true);
  }
  // Another tab changed the list.
  window.addEventListener("storage", (e) => { if (e.key === "glmtool.chats") renderChatList(); });
  setBusy(false);
  loadModel();
  els.input.focus();
})();
