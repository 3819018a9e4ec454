// Checks of the chat page's Markdown renderer (window.glmtoolChat), run inside the page by
// tests/browser.rs: pathological inputs, and a seeded fuzz loop over generated Markdown.
// Everything here is a function; browser.rs appends the call it wants.
"use strict";

/** Tags the renderer may produce, with the attributes each may carry. */
const ALLOWED = {
  P: [], BR: [], STRONG: [], EM: [], DEL: [], PRE: [], UL: [], LI: [], BLOCKQUOTE: [], HR: [],
  TABLE: [], THEAD: [], TBODY: [], TR: [],
  CODE: ["data-lang"], OL: ["start"], A: ["href", "rel", "target"],
  H3: ["class"], H4: ["class"], H5: ["class"], H6: ["class"], TH: ["class"], TD: ["class"],
  SPAN: ["class"], DIV: ["class"], BUTTON: ["type", "class", "aria-label"],
};

/** The deepest element below `root` (iteratively: the tree may be deep). */
function domDepth(root) {
  let max = 0;
  const stack = [[root, 0]];
  while (stack.length) {
    const [n, d] = stack.pop();
    if (d > max) max = d;
    for (const c of n.children) stack.push([c, d + 1]);
  }
  return max;
}

/** What is wrong with a rendered tree: elements or attributes outside ALLOWED, bad links. */
function unsafeParts(root) {
  const bad = [];
  for (const e of root.querySelectorAll("*")) {
    const ok = ALLOWED[e.tagName];
    if (!ok) { bad.push("element " + e.tagName); continue; }
    for (const a of e.attributes) {
      if (!ok.includes(a.name)) bad.push(`${e.tagName} ${a.name}=${a.value}`);
      else if (a.name === "href" && !/^(https?:\/\/|mailto:)/i.test(a.value)) bad.push("href " + a.value);
      else if (a.name === "start" && !/^\d+$/.test(a.value)) bad.push("start " + a.value);
    }
  }
  return bad;
}

/** Renders `src` once, and streamed in `step`-character pieces (one update per piece). */
function timeRender(src, step) {
  const res = { chars: src.length };
  let t = performance.now();
  try {
    const d = glmtoolChat.markdown(src);
    res.depth = domDepth(d);
    res.text = d.textContent;
  } catch (e) { res.error = String(e); }
  res.once_ms = performance.now() - t;
  res.frames = 0;
  res.max_frame_ms = 0;
  t = performance.now();
  try {
    // A page without the streaming renderer rendered the whole text at every frame.
    const s = glmtoolChat.markdownStream ? glmtoolChat.markdownStream() : null;
    for (let n = step; ; n += step) {
      const f = performance.now();
      const last = n >= src.length;
      if (s) s.update(src.slice(0, n), last);
      else glmtoolChat.markdown(src.slice(0, n));
      res.frames++;
      res.max_frame_ms = Math.max(res.max_frame_ms, performance.now() - f);
      if (last) break;
      if (performance.now() - t > 5000) { res.stream_error = `gave up after 5 s, at ${n} chars`; break; }
    }
  } catch (e) { res.stream_error = String(e); }
  res.streamed_ms = performance.now() - t;
  return res;
}

/** The pathological inputs of issue 19 and their relatives (each about 20 KB). */
function pathologicalInputs() {
  return {
    "5,000 '>' then text": ">".repeat(5000) + " deep",
    "list nested 1,000 deep, 10 times (20 KB)": Array.from({ length: 10 }, (_, k) => "- ".repeat(1000) + "deep" + k).join("\n"),
    "list indented 140 levels (20 KB)": Array.from({ length: 140 }, (_, k) => "  ".repeat(k) + "- deep" + k).join("\n"),
    "50 lines of '> ' x 200": Array.from({ length: 50 }, (_, k) => "> ".repeat(200) + "deep" + k).join("\n"),
    "20,000 blank lines inside a list": "- a\n" + "\n".repeat(20000) + "  deep",
    "'*a ' x 7,000 (no closer)": "*a ".repeat(7000) + "deep",
    "'\\( ' x 7,000 (no closer)": "\\( ".repeat(7000) + "deep",
    "'[' x 20,000": "[".repeat(20000) + "deep",
    "'[a](' x 5,000": "[a](".repeat(5000) + "deep",
  };
}

/** Times one of `pathologicalInputs`; `ends_visible`: the text after the nesting is shown. */
function pathological(name, step) {
  const r = timeRender(pathologicalInputs()[name], step);
  r.ends_visible = typeof r.text === "string" && r.text.includes("deep");
  delete r.text;
  return r;
}

/** mulberry32: a small seeded generator, so that a failing document can be made again. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE = [
  "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", '<a href="javascript:alert(1)">x</a>',
  "&lt;b&gt;", "&amp;", "<b>", "</p>", "<!-- c -->", "<iframe src=//e>", "javascript:alert(1)",
  "data:text/html,<b>x</b>", "[x](data:text/html,hi)", "[x](JaVaScRiPt:alert(1))", "![i](https://e.com/i.png)",
  "<svg onload=alert(1)>", '" onmouseover="alert(1)', "[x](https://e.com/\" onclick=\"alert(1))",
  "<https://e.com/\"><script>>", "\u2028", "\u0000", "\ud83d", "&#x3C;script&#x3E;",
];
const LOOSE = ["*", "**", "_", "__", "~~", "`", "``", "$", "$$", "[", "]", "](", "\\", "<", ">", "|",
  "#", "\\*", "\\_", "***", "___", "-", "1.", "(", ")", "\\(", "\\[", "\\]", "$5", "~"];
const SCRIPTS = ["w", "Ünï", "天气", "日本語", "ß", "🙂", "Ωμέγα", "مرحبا", "x͏̈"];

/**
 * A random Markdown document: {src, words}. `words` are the generated words placed where they
 * must be shown (as text, or in a link's href): each is unique ("…<serial>q").
 */
function makeDoc(r) {
  const words = [];
  let serial = 0;
  const int = (n) => Math.floor(r() * n);
  const pick = (a) => a[int(a.length)];
  const word = () => {
    const w = pick(SCRIPTS) + serial++ + "q";
    words.push(w);
    return w;
  };
  const url = () => "https://example.com/" + pick(["a", "b_(c)", "x?y=1&z=2", "p/q#r", ""]);
  function inl(depth) {
    switch (int(24)) {
      case 0: return `*${word()}*`;
      case 1: return `**${word()} ${word()}**`;
      case 2: return `_${word()}_`;
      case 3: return `__${word()}__`;
      case 4: return `~~${word()}~~`;
      case 5: return "`" + word() + " <b>`";
      case 6: return "``" + word() + "`x``";
      case 7: return `$${word()}$`;
      case 8: return `\\(${word()} \\)`;
      case 9: return `[${word()}](${url()}${r() < 0.3 ? ' "title"' : ""})`;
      case 10: return `[${word()}](javascript:alert(1))`;
      case 11: return `<https://example.org/${word()}>`;
      case 12: return `https://example.net/${word()}.`;
      case 13: case 14: return pick(HOSTILE);
      case 15: case 16: return pick(LOOSE);
      case 17: return `${word()}_${word()}_${word()}`;
      case 18: return depth < 4 ? `**${inl(depth + 1)} ${inl(depth + 1)}**` : word();
      case 19: return depth < 4 ? `*${word()} ${inl(depth + 1)}*` : word();
      case 20: return depth < 4 ? `~~_${inl(depth + 1)}_~~` : word();
      case 21: return `mailto:${word()}@e.com [m](mailto:a@b.c)`;
      default: return word();
    }
  }
  const line = () => Array.from({ length: 1 + int(5) }, () => inl(0)).join(" ");
  const para = () => Array.from({ length: 1 + int(3) }, line).join("\n");
  function blockLines(depth) {
    switch (depth > 3 ? 9 : int(12)) {
      case 0: return ["#".repeat(1 + int(6)) + " " + line() + (r() < 0.3 ? " ##" : "")];
      case 1: {
        const marks = pick(["```", "~~~", "````"]);
        const body = Array.from({ length: int(4) }, () => (r() < 0.3 ? "  " : "") + line());
        const open = marks + (r() < 0.6 ? word() : "");
        return r() < 0.2 ? [open, ...body] : [open, ...body, marks];
      }
      case 2: {
        const inner = Array.from({ length: 1 + int(3) }, () => blockLines(depth + 1))
          .flatMap((b, k) => (k ? ["", ...b] : b));
        return inner.map((l) => (l === "" && r() < 0.5 ? ">" : "> " + l));
      }
      case 3: case 4: {
        const marker = pick(["- ", "* ", "+ ", "1. ", "2) "]);
        const out = [];
        for (let k = 1 + int(4); k > 0; k--) {
          out.push(marker + line());
          if (r() < 0.4) {
            if (r() < 0.5) out.push("");
            for (const l of blockLines(depth + 1)) out.push(l ? " ".repeat(marker.length) + l : "");
          }
          if (r() < 0.3) out.push("");
        }
        return out;
      }
      case 5: {
        const cols = 1 + int(4);
        const row = () => "| " + Array.from({ length: cols }, () => inl(2)).join(" | ") + " |";
        const sep = "|" + Array.from({ length: cols }, () => pick(["---", ":--", "--:", ":-:"])).join("|") + "|";
        return [row(), sep, ...Array.from({ length: int(4) }, row)];
      }
      case 6: return [pick(["---", "***", "- - -", "___"])];
      case 7: return [">".repeat(int(40)) + " " + line()];
      case 8: return ["- ".repeat(1 + int(40)) + line()];
      default: return para().split("\n");
    }
  }
  const blocks = Array.from({ length: 1 + int(8) }, () => blockLines(0).join(pick(["\n", "\n", "\r\n"])));
  const src = blocks.join(pick(["\n\n", "\n", "\n\n\n", "\r\n\r\n"])) + pick(["", "\n", " "]);
  return { src, words };
}

/**
 * Renders `n` generated documents from `seed` (the seeds seed, seed + 1, …): none throws, only
 * allowed elements and attributes appear, every generated word is shown, the DOM depth stays
 * under `maxDepth`, and streaming the document in random pieces gives, after every piece, the
 * same tree as rendering that prefix at once. Returns {docs, chars, pieces, failures}.
 */
function fuzz(seed, n, maxDepth) {
  const failures = [];
  let chars = 0, pieces = 0;
  const html = (d) => d.innerHTML;
  for (let k = 0; k < n && failures.length < 5; k++) {
    const r = rng(seed + k);
    const { src, words } = makeDoc(r);
    chars += src.length;
    const fail = (what) => failures.push({ seed: seed + k, what, src });
    let d;
    try { d = glmtoolChat.markdown(src); } catch (e) { fail("threw " + e); continue; }
    const bad = unsafeParts(d);
    if (bad.length) { fail("unsafe: " + bad.slice(0, 3).join("; ")); continue; }
    const shown = d.textContent + " " + [...d.querySelectorAll("a")].map((a) => a.getAttribute("href")).join(" ");
    const lost = words.filter((w) => !shown.includes(w));
    if (lost.length) { fail("words not shown: " + lost.slice(0, 5).join(", ")); continue; }
    const depth = domDepth(d);
    if (depth > maxDepth) { fail(`DOM depth ${depth} > ${maxDepth}`); continue; }
    try {
      // Every third document one character at a time, the others in pieces of 1 to 60.
      const piece = k % 3 === 0 ? () => 1 : () => 1 + Math.floor(r() * (r() < 0.5 ? 4 : 60));
      const s = glmtoolChat.markdownStream();
      for (let at = 0; at < src.length;) {
        at = Math.min(src.length, at + piece());
        const final = at === src.length && r() < 0.5;
        pieces++;
        const got = html(s.update(src.slice(0, at), final));
        const want = html(glmtoolChat.markdown(src.slice(0, at)));
        if (got !== want) { fail(`streamed prefix of ${at} chars differs:\n${got}\nvs\n${want}`); break; }
        if (at === src.length && !final && html(s.update(src, true)) !== html(d)) fail("final render differs");
      }
    } catch (e) { fail("streaming threw " + e); }
  }
  return { docs: n, chars, pieces, failures };
}
