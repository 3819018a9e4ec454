//! The chat page of `glmtool serve` in a real browser: headless Chromium driven over the
//! WebDriver protocol (chromedriver, plain HTTP + JSON through ureq), against a real server on
//! the bundled demo model. It types, presses Enter and Stop, checks what the page shows, fuzzes
//! the Markdown renderer, reloads, edits, regenerates, manages saved conversations, lays the page
//! out as a phone, and takes screenshots (`GLMTOOL_UPDATE_SCREENSHOT=1` writes them to
//! docs/img/chat.png and docs/img/chat-mobile.png).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`);
//! `CHROMIUM` / `CHROMEDRIVER` name other binaries. Without a Chromium binary the test prints
//! SKIP and passes; with one, everything must work.

#![cfg(feature = "server")]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ENTER: &str = "\u{E007}";
const SHIFT: &str = "\u{E008}";
const TAB: &str = "\u{E004}";
/// Releases the modifier keys pressed earlier in the same "send keys".
const RELEASE: &str = "\u{E000}";

// ---------------------------------------------------------------- the server

mod common;
use common::{agent, server};

// ---------------------------------------------------------------- chromedriver + a session

/// chromedriver (in its own process group, so that the browsers it started go with it) and one
/// browser session.
struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build()
            .delete(&self.session)
            .call();
        // The group of the chromedriver we started: it and the browsers it left behind.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The WebDriver id of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let mut driver = Command::new(chromedriver)
            .arg("--port=0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let mut out = BufReader::new(driver.stdout.take().unwrap());
        let mut port = None;
        let mut seen = String::new();
        let mut line = String::new();
        while port.is_none() {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = driver.kill();
                panic!("chromedriver said no port: {seen}");
            }
            seen.push_str(&line);
            // "ChromeDriver was started successfully on port 12345."
            if let Some(p) = line.split("successfully on port ").nth(1) {
                port = p.trim().trim_end_matches('.').parse::<u16>().ok();
            }
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let profile = tempfile::tempdir().unwrap();
        let base = format!("http://127.0.0.1:{}", port.unwrap());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    "--force-device-scale-factor=1", "--lang=en-US",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut b = Browser {
            driver,
            session: String::new(),
            _profile: profile,
        };
        let v = post_json(&format!("{base}/session"), &caps);
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"));
        b.session = format!("{base}/session/{id}");
        // Scripts may run for a while (the Markdown fuzz batches), under ureq's 60 s.
        b.post("/timeouts", json!({"script": 50_000}));
        b
    }

    fn post(&self, path: &str, body: Value) -> Value {
        post_json(&format!("{}{path}", self.session), &body)
    }

    fn get(&self, path: &str) -> Value {
        wd(agent().get(&format!("{}{path}", self.session)).call())
    }

    fn delete(&self, path: &str) -> Value {
        wd(agent().delete(&format!("{}{path}", self.session)).call())
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
    }

    fn find(&self, css: &str) -> String {
        let v = self.post("/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Types into an element as a user would (trusted key events).
    fn keys(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/value"), json!({ "text": text }));
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/click"), json!({}));
    }

    fn clear(&self, css: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/clear"), json!({}));
    }

    /// Polls `script` until it returns something truthy; panics with the page's state after
    /// `secs` seconds.
    fn wait(&self, what: &str, script: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; page: {}", self.state());
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    }

    /// What the page shows, for failure messages.
    fn state(&self) -> Value {
        self.js(
            "return {status: document.getElementById('status').textContent, \
             busy: document.body.classList.contains('busy'), \
             messages: [...document.querySelectorAll('.msg')].map(m => m.className + ': ' + m.textContent)};",
        )
    }

    fn screenshot(&self) -> Vec<u8> {
        let v = self.get("/screenshot");
        base64_decode(v.as_str().expect("a base64 screenshot"))
    }
}

/// POSTs a WebDriver command; its `value`.
fn post_json(url: &str, body: &Value) -> Value {
    wd(agent().post(url).send_json(body.clone()))
}

/// The `value` of a WebDriver response; panics with the driver's error.
fn wd(r: Result<ureq::Response, ureq::Error>) -> Value {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            panic!(
                "WebDriver error {code}: {}",
                r.into_string().unwrap_or_default()
            )
        }
        Err(e) => panic!("WebDriver: {e}"),
    };
    let v: Value = resp.into_json().unwrap();
    v["value"].clone()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (val(c) as u32) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

/// Chromium and chromedriver, or None (the test is skipped) when there is no Chromium.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = match std::env::var_os("CHROMIUM").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let p = PathBuf::from("/usr/bin/chromium");
            if !p.exists() {
                return None;
            }
            p
        }
    };
    assert!(
        chromium.exists(),
        "CHROMIUM={} does not exist",
        chromium.display()
    );
    let driver = std::env::var_os("CHROMEDRIVER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            [
                PathBuf::from("/usr/bin/chromedriver"),
                chromium.with_file_name("chromedriver"),
            ]
            .into_iter()
            .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "{} exists but chromedriver was not found: apt-get install -y chromium-driver, \
                 or set CHROMEDRIVER",
                chromium.display()
            )
        });
    Some((chromium, driver))
}

// ---------------------------------------------------------------- the test

/// Counts of messages on the page: user, assistant.
const COUNTS: &str = "return [document.querySelectorAll('.msg.user').length, \
                      document.querySelectorAll('.msg.assistant').length];";
/// The last reply is complete: not generating, with its stats line (or an error).
const REPLY_DONE: &str = "const a = [...document.querySelectorAll('.msg.assistant')].pop(); \
     return !document.body.classList.contains('busy') && !!a && \
       (a.querySelector('.stats').textContent !== '' || a.classList.contains('error'));";
const LAST_REPLY: &str = "const a = [...document.querySelectorAll('.msg.assistant')].pop(); \
     return {text: a.querySelector('.body').textContent, stats: a.querySelector('.stats').textContent, \
             classes: a.className};";

#[test]
fn the_chat_page_in_chromium() {
    let Some((chromium, chromedriver)) = binaries() else {
        eprintln!(
            "SKIP the_chat_page_in_chromium: no Chromium (/usr/bin/chromium or $CHROMIUM); \
             install it with `apt-get install -y chromium chromium-driver`"
        );
        return;
    };
    let t0 = Instant::now();
    let cache = tempfile::tempdir().unwrap();
    let s = server(cache.path(), &[]);
    let keyed = server(cache.path(), &["--api-key", "sk-browser-test"]);

    // The assets over plain HTTP: types, no-cache, small, and outside the API key.
    let mut total = 0;
    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = agent()
            .get(&format!("{}{path}", keyed.base))
            .call()
            .unwrap();
        assert_eq!(r.header("content-type"), Some(ct), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        total += r.into_string().unwrap().len();
    }
    assert!(total < 100 * 1024, "assets: {total} bytes");
    match agent().get(&format!("{}/v1/models", keyed.base)).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("/v1/models without the key: {other:?}"),
    }

    let b = Browser::start(&chromium, &chromedriver);
    b.goto(&format!("{}/", s.base));
    b.wait(
        "the model name from /v1/models",
        "return document.getElementById('model').textContent === 'tiny-chatglm3';",
        20,
    );

    // Every control has a label; every clickable thing is a <button>.
    let unlabeled = b.js(
        "return [...document.querySelectorAll('input, textarea, select')] \
           .filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id);",
    );
    assert_eq!(unlabeled, json!([]), "controls without a label");
    let live = b.js("return document.getElementById('messages').getAttribute('aria-live');");
    assert_eq!(live, "polite");

    // The Markdown renderer: structure, and model text never becomes markup.
    let md = b.js(r###"
        const d = glmtoolChat.markdown("## Title\n\nSome **bold**, *it*, `x<y>`, $a*b*c$ and <img src=x onerror=alert(1)>.\n\n- one\n- two\n  1. nested\n\n```js\nlet s = '<b>hi</b>';\n```\n\n[ok](https://example.com/a) [bad](javascript:alert(1)) <script>alert(2)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |");
        return {
          h: d.querySelector('h4') && d.querySelector('h4').textContent,
          strong: d.querySelector('strong').textContent, em: d.querySelector('em').textContent,
          code: d.querySelector('p code').textContent,
          math: d.querySelector('.math').textContent,
          img: d.querySelectorAll('img, script').length,
          items: d.querySelectorAll('ul > li').length, nested: d.querySelectorAll('ul ol li').length,
          pre: d.querySelector('pre code').textContent,
          copy: d.querySelector('.code button').textContent,
          links: [...d.querySelectorAll('a')].map(a => a.getAttribute('href')),
          cells: d.querySelectorAll('td').length,
          text: d.textContent,
        };"###);
    assert_eq!(md["h"], "Title", "{md}");
    assert_eq!(
        (&md["strong"], &md["em"], &md["code"]),
        (&json!("bold"), &json!("it"), &json!("x<y>")),
        "{md}"
    );
    assert_eq!(md["math"], "$a*b*c$", "math stays text: {md}");
    assert_eq!(md["img"], 0, "{md}");
    assert_eq!(
        (&md["items"], &md["nested"]),
        (&json!(2), &json!(1)),
        "{md}"
    );
    assert_eq!(md["pre"], "let s = '<b>hi</b>';", "{md}");
    assert_eq!(md["copy"], "Copy");
    assert_eq!(md["links"], json!(["https://example.com/a"]), "{md}");
    assert_eq!(md["cells"], 2, "{md}");
    let text = md["text"].as_str().unwrap();
    assert!(
        text.contains("<img src=x onerror=alert(1)>") && text.contains("<script>alert(2)</script>"),
        "HTML is shown as text: {text}"
    );

    markdown_limits_and_fuzz(&b);

    // 1. A message, sent with Enter, streams in. The browser's network is throttled so that
    // the (very fast) demo model's reply arrives over a few seconds.
    let throttle = |bytes_per_s: u64| {
        b.post(
            "/chromium/network_conditions",
            json!({"network_conditions": {"offline": false, "latency": 0,
                   "download_throughput": bytes_per_s, "upload_throughput": 10_000_000}}),
        )
    };
    b.clear("#max-tokens");
    b.keys("#max-tokens", "24");
    throttle(3000);
    b.keys("#input", &format!("Tell me a fortune{ENTER}"));
    let streaming = b.wait(
        "streamed text while the reply is still running",
        "const a = document.querySelector('.msg.assistant .body'); \
         return document.body.classList.contains('busy') && a && a.textContent.trim() !== '' \
           && !document.getElementById('stop').hidden && a.textContent;",
        20,
    );
    b.wait("the first reply", REPLY_DONE, 30);
    let first = b.js(LAST_REPLY);
    let text = first["text"].as_str().unwrap();
    assert!(
        text.len() > streaming.as_str().unwrap().len()
            && text.starts_with(streaming.as_str().unwrap().trim_end()),
        "the reply grew from what was streamed: {first} vs {streaming}"
    );
    let stats = first["stats"].as_str().unwrap();
    for want in ["tokens/s", "24 tokens", "prompt 13", "cached"] {
        assert!(
            stats.contains(want),
            "{want:?} not in the stats line {stats:?}"
        );
    }
    assert_eq!(b.js(COUNTS), json!([1, 1]));
    assert_eq!(
        b.js("return document.querySelector('.msg.user .body').textContent;"),
        "Tell me a fortune"
    );
    assert_eq!(b.js("return document.getElementById('input').value;"), "");

    // 2. A long reply, stopped as soon as its first words are on the page.
    b.clear("#max-tokens");
    b.keys("#max-tokens", "400");
    b.keys("#input", &format!("Tell me a long story{ENTER}"));
    b.wait(
        "the first words of the long reply",
        "const a = document.querySelectorAll('.msg.assistant .body')[1]; \
         return a && a.textContent.trim() !== '';",
        20,
    );
    b.click("#stop");
    b.wait("the stopped reply", REPLY_DONE, 20);
    b.delete("/chromium/network_conditions");
    let stopped = b.js(LAST_REPLY);
    assert!(
        stopped["classes"].as_str().unwrap().contains("stopped"),
        "{stopped}"
    );
    let stats = stopped["stats"].as_str().unwrap();
    assert!(
        stats.starts_with("Stopped") && !stats.contains("max tokens"),
        "{stats}"
    );
    let ui = b.js(
        "const s = document.getElementById('send'), t = document.getElementById('stop'); \
         return {status: document.getElementById('status').textContent, \
                 send: !s.hidden && !s.disabled && s.offsetParent !== null, stop: t.hidden, \
                 history: glmtoolChat.history().length};",
    );
    assert_eq!(
        ui,
        json!({"status": "Stopped.", "send": true, "stop": true, "history": 4}),
        "after Stop (the partial reply stays in the history)"
    );

    // 3. Shift+Enter is a new line; Enter during an IME composition does not send.
    b.clear("#max-tokens");
    b.keys("#max-tokens", "16");
    b.keys(
        "#input",
        &format!("first line{SHIFT}{ENTER}{RELEASE}second line"),
    );
    assert_eq!(
        b.js("return document.getElementById('input').value;"),
        "first line\nsecond line"
    );
    assert_eq!(b.js(COUNTS), json!([2, 2]), "Shift+Enter sent the message");
    let ime = b.js("const i = document.getElementById('input'); i.focus(); \
         const key = (init) => i.dispatchEvent(new KeyboardEvent('keydown', \
           Object.assign({key: 'Enter', code: 'Enter', bubbles: true, cancelable: true}, init))); \
         key({isComposing: true, keyCode: 229}); \
         i.dispatchEvent(new CompositionEvent('compositionstart', {data: ''})); \
         key({isComposing: true}); \
         key({keyCode: 13}); \
         i.dispatchEvent(new CompositionEvent('compositionend', {data: '你好'})); \
         return [document.querySelectorAll('.msg').length, i.value];");
    assert_eq!(
        ime,
        json!([4, "first line\nsecond line"]),
        "an Enter of an IME composition sent the message"
    );
    b.keys("#input", ENTER);
    b.wait("the reply to the two lines", REPLY_DONE, 20);
    assert_eq!(b.js(COUNTS), json!([3, 3]));
    assert_eq!(
        b.js("return [...document.querySelectorAll('.msg.user .body')].pop().textContent;"),
        "first line\nsecond line"
    );
    let third = b.js(LAST_REPLY);
    assert!(
        third["text"].as_str().unwrap().trim() != ""
            && third["stats"].as_str().unwrap().contains("tokens/s"),
        "{third}"
    );

    let shot = b.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    let path = if std::env::var_os("GLMTOOL_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/chat.png")
    } else {
        std::env::temp_dir().join("glmtool-chat.png")
    };
    std::fs::write(&path, &shot).unwrap();
    eprintln!("screenshot: {}", path.display());

    // 4. New chat empties the conversation.
    b.click("#new-chat");
    assert_eq!(b.js(COUNTS), json!([0, 0]));
    assert_eq!(b.js("return glmtoolChat.history().length;"), 0);

    // 5. A tool call, streamed in pieces (the demo model does not call tools, so this reply is
    // played by a stand-in for fetch), shown as a card; its result goes back as a tool message
    // and the real model continues.
    b.js(r#"
        const real = window.fetch;
        window.sentBodies = [];
        window.fetch = async (url, init) => {
          if (!String(url).endsWith('/v1/chat/completions')) return real(url, init);
          window.sentBodies.push(JSON.parse(init.body));
          if (window.sentBodies.length > 1) return real(url, init);
          const d = (delta, finish) => ({choices: [{index: 0, delta, finish_reason: finish || null}]});
          const chunks = [
            d({role: 'assistant', content: ''}),
            d({tool_calls: [{index: 0, id: 'call_test1', type: 'function', function: {name: 'get_weather', arguments: ''}}]}),
            d({tool_calls: [{index: 0, function: {arguments: '{"city_name": '}}]}),
            d({tool_calls: [{index: 0, function: {arguments: '"北京"}'}}]}),
            d({}, 'tool_calls'),
            {choices: [], usage: {prompt_tokens: 60, completion_tokens: 12, total_tokens: 72,
              prompt_tokens_details: {cached_tokens: 50}},
             timings: {prompt_n: 10, prompt_ms: 20, predicted_n: 12, predicted_ms: 48, predicted_per_second: 250}},
          ];
          const body = chunks.map(c => 'data: ' + JSON.stringify(c) + '\n\n').join('') + 'data: [DONE]\n\n';
          return new Response(body, {headers: {'Content-Type': 'text/event-stream'}});
        };
        return true;"#);
    b.clear("#tools");
    b.keys(
        "#tools",
        r#"[{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city_name": {"type": "string"}}}}]"#,
    );
    b.keys("#input", "今天北京的天气怎么样？");
    b.click("#send");
    b.wait(
        "the tool-call card",
        "return document.querySelector('details.tool-call textarea');",
        20,
    );
    let mut card = b.js("const c = document.querySelector('details.tool-call'); \
         return {open: c.open, name: c.querySelector('summary').textContent, \
                 args: c.querySelector('pre').textContent, \
                 stats: [...document.querySelectorAll('.msg.assistant .stats')].pop().textContent, \
                 focused: document.activeElement === c.querySelector('textarea'), \
                 labeled: c.querySelector('textarea').labels.length};");
    let stats = card["stats"].as_str().unwrap().to_string();
    assert!(
        stats.starts_with("250 tokens/s · 12 tokens · prompt 60 (50 cached) at 500 tokens/s · "),
        "stats from usage and timings: {stats}"
    );
    card["stats"] = json!("");
    assert_eq!(
        card,
        json!({"open": true, "name": "Tool call get_weather", "args": "{\n  \"city_name\": \"北京\"\n}",
               "stats": "", "focused": true, "labeled": 1}),
    );
    b.keys("details.tool-call textarea", "晴, 12°C");
    b.click("details.tool-call button");
    b.wait("the reply after the tool result", REPLY_DONE, 20);
    let sent = b.js("return window.sentBodies;");
    let first_req = &sent[0];
    assert_eq!(first_req["stream"], true);
    assert_eq!(first_req["stream_options"], json!({"include_usage": true}));
    assert_eq!(first_req["max_tokens"], 16);
    assert_eq!(
        first_req["tools"][0]["function"]["name"], "get_weather",
        "bare functions are wrapped: {first_req}"
    );
    let msgs = sent[1]["messages"].as_array().unwrap();
    let n = msgs.len();
    assert_eq!(
        msgs[n - 2]["tool_calls"][0],
        json!({"id": "call_test1", "type": "function",
               "function": {"name": "get_weather", "arguments": "{\"city_name\": \"北京\"}"}})
    );
    assert_eq!(
        msgs[n - 1],
        json!({"role": "tool", "tool_call_id": "call_test1", "content": "晴, 12°C"})
    );
    let after = b.js(LAST_REPLY);
    assert!(
        !after["classes"].as_str().unwrap().contains("error")
            && after["stats"].as_str().unwrap().contains("tokens/s"),
        "the real model's answer to the tool result: {after}"
    );
    b.clear("#tools");

    scripted_replies(&b);
    let shown_before = b.js(SHOWN);

    // 6. A server with --api-key: the page asks for the key, keeps it, and sends it.
    b.goto(&format!("{}/", keyed.base));
    b.wait(
        "the request for the API key",
        "return document.getElementById('status').textContent.includes('API key') \
           && document.activeElement.id === 'api-key';",
        20,
    );
    b.keys("#input", &format!("Hello{ENTER}"));
    b.wait("the 401 reply", REPLY_DONE, 20);
    let failed = b.js(LAST_REPLY);
    assert!(
        failed["classes"].as_str().unwrap().contains("error")
            && failed["text"].as_str().unwrap().contains("API key"),
        "{failed}"
    );
    b.keys("#api-key", &format!("sk-browser-test{TAB}"));
    b.wait(
        "the model name, with the key",
        "return document.getElementById('model').textContent === 'tiny-chatglm3';",
        20,
    );
    b.click(".msg.assistant button.retry");
    b.wait("the reply with the key", REPLY_DONE, 20);
    let ok = b.js(LAST_REPLY);
    assert!(
        !ok["classes"].as_str().unwrap().contains("error")
            && ok["stats"].as_str().unwrap().contains("tokens/s"),
        "{ok}"
    );
    b.goto(&format!("{}/", keyed.base));
    b.wait(
        "the kept key",
        "return document.getElementById('model').textContent === 'tiny-chatglm3' \
           && document.getElementById('api-key').value === 'sk-browser-test';",
        20,
    );

    // 7. Back on the first server: the conversation is still there; saved conversations.
    b.goto(&format!("{}/", s.base));
    b.wait(
        "the model name after coming back",
        "return document.getElementById('model').textContent === 'tiny-chatglm3';",
        20,
    );
    assert_eq!(
        b.js(SHOWN),
        shown_before,
        "the conversation after leaving and reloading the page"
    );
    conversations(&b, &s);
    waiting_for_a_slot(&b);
    mobile_layout(&b);

    // Nothing went wrong in the page (the 401s above were expected).
    if let Ok(resp) = agent()
        .post(&format!("{}/se/log", b.session))
        .send_json(json!({"type": "browser"}))
    {
        let logs: Value = resp.into_json().unwrap();
        let bad: Vec<&Value> = logs["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["level"] == "SEVERE" && !e["message"].as_str().unwrap_or("").contains("401")
            })
            .collect();
        assert!(bad.is_empty(), "browser console errors: {bad:?}");
    }
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("request id="), "{log}");
    eprintln!("browser test: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- the Markdown renderer

/// tests/browser/markdown.js: pathological inputs and the fuzz loop, run in the page.
const MARKDOWN_JS: &str = include_str!("browser/markdown.js");

/// The deepest the renderer's tree may be below its container: a quote per nesting level or a
/// list and its item, then a table cell (table, tbody, tr, td), emphasis, and a link or code.
fn depth_bound(b: &Browser) -> u64 {
    let limits = b.js("return glmtoolChat.limits;");
    let nest = limits["nest"].as_u64().expect("glmtoolChat.limits.nest");
    let inline = limits["inline"]
        .as_u64()
        .expect("glmtoolChat.limits.inline");
    2 * nest + 4 + inline + 1
}

/// Issue 19: inputs that overflowed the stack or took seconds per render, each rendered at once
/// and streamed in 100-character pieces (timings printed, not asserted); then
/// `GLMTOOL_CHAT_FUZZ_DOCS` (300) generated documents from `GLMTOOL_CHAT_FUZZ_SEED` (a fixed
/// default; "random" picks one), each checked by `fuzz` in markdown.js.
fn markdown_limits_and_fuzz(b: &Browser) {
    let names = b.js(&format!(
        "{MARKDOWN_JS}\nreturn Object.keys(pathologicalInputs());"
    ));
    let names: Vec<String> = serde_json::from_value(names).unwrap();
    assert_eq!(names.len(), 9);
    let mut results = vec![];
    for name in &names {
        let r = b.js(&format!(
            "{MARKDOWN_JS}\nreturn pathological({}, 100);",
            json!(name)
        ));
        eprintln!(
            "markdown {name:<45} {:>6} chars: once {:>7.1} ms, streamed {:>4} frames {:>7.1} ms \
             (slowest frame {:>6.1} ms), DOM depth {} {}{}",
            r["chars"],
            r["once_ms"].as_f64().unwrap_or(f64::NAN),
            r["frames"],
            r["streamed_ms"].as_f64().unwrap_or(f64::NAN),
            r["max_frame_ms"].as_f64().unwrap_or(f64::NAN),
            r["depth"],
            r["error"].as_str().unwrap_or(""),
            r["stream_error"].as_str().unwrap_or(""),
        );
        results.push((name, r));
    }
    let bound = depth_bound(b);
    for (name, r) in results {
        assert!(
            r.get("error").is_none() && r.get("stream_error").is_none(),
            "{name}: {r}"
        );
        assert_eq!(
            r["ends_visible"], true,
            "{name}: the text after the nesting is lost"
        );
        let depth = r["depth"].as_u64().unwrap();
        assert!(depth <= bound, "{name}: DOM depth {depth} > {bound}");
    }

    let seed: u64 = match std::env::var("GLMTOOL_CHAT_FUZZ_SEED").ok().as_deref() {
        None | Some("") => 194,
        Some("random") => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_000
        }
        Some(s) => s
            .parse()
            .expect("GLMTOOL_CHAT_FUZZ_SEED: a number or \"random\""),
    };
    let docs: u64 = std::env::var("GLMTOOL_CHAT_FUZZ_DOCS")
        .ok()
        .map(|s| s.parse().expect("GLMTOOL_CHAT_FUZZ_DOCS: a number"))
        .unwrap_or(300);
    eprintln!(
        "markdown fuzz: {docs} documents from seed {seed} \
         (GLMTOOL_CHAT_FUZZ_SEED={seed} GLMTOOL_CHAT_FUZZ_DOCS={docs} to repeat)"
    );
    let t = Instant::now();
    let (mut chars, mut pieces) = (0, 0);
    let batch = 50;
    for first in (0..docs).step_by(batch as usize) {
        let n = batch.min(docs - first);
        let r = b.js(&format!(
            "{MARKDOWN_JS}\nreturn fuzz({}, {n}, {bound});",
            seed + first
        ));
        let failures = r["failures"].as_array().expect("fuzz() results");
        if let Some(f) = failures.first() {
            panic!(
                "markdown fuzz: document of seed {} (GLMTOOL_CHAT_FUZZ_SEED={} \
                 GLMTOOL_CHAT_FUZZ_DOCS=1 repeats it): {}\nsource: {:?}",
                f["seed"],
                f["seed"],
                f["what"].as_str().unwrap_or(""),
                f["src"].as_str().unwrap_or("")
            );
        }
        chars += r["chars"].as_u64().unwrap();
        pieces += r["pieces"].as_u64().unwrap();
    }
    eprintln!(
        "markdown fuzz: {docs} documents, {chars} chars, {pieces} streamed prefixes compared, \
         no failure ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
}

/// Replies played by a stand-in for `fetch` (the demo model writes none of these): each entry
/// of `window.scripted` is one streamed response, its SSE events sent `delay` ms apart.
const SCRIPTED_FETCH: &str = r#"
    const real = window.fetch;
    window.scripted = [];
    window.fetch = async (url, init) => {
      if (!String(url).endsWith('/v1/chat/completions') || !window.scripted.length) return real(url, init);
      const { events, delay } = window.scripted.shift();
      const enc = new TextEncoder();
      const body = new ReadableStream({ async start(ctl) {
        for (const e of events) {
          ctl.enqueue(enc.encode('data: ' + (typeof e === 'string' ? e : JSON.stringify(e)) + '\n\n'));
          if (delay) await new Promise((r) => setTimeout(r, delay));
        }
        ctl.close();
      } });
      return new Response(body, { headers: { 'Content-Type': 'text/event-stream' } });
    };
    // Content deltas of `text` in `size`-character pieces, then the end of the reply.
    window.reply = (text, size, tail) => {
      const d = (delta, finish) => ({ choices: [{ index: 0, delta, finish_reason: finish || null }] });
      const events = [d({ role: 'assistant', content: '' })];
      for (let k = 0; k < text.length; k += size) events.push(d({ content: text.slice(k, k + size) }));
      return events.concat(tail || [d({}, 'stop'), '[DONE]']);
    };
    window.frames = (n) => { window.framesSeen = 0;
      const tick = () => { if (++window.framesSeen < n) requestAnimationFrame(tick); };
      requestAnimationFrame(tick); };
    return true;"#;

/// What the last reply shows, its DOM depth, and what the conversation holds.
const LAST_REPLY_DEEP: &str = "const a = [...document.querySelectorAll('.msg.assistant')].pop(); \
     const b = a.querySelector('.body'); let max = 0; const st = [[b, 0]]; \
     while (st.length) { const [n, d] = st.pop(); max = Math.max(max, d); \
       for (const c of n.children) st.push([c, d + 1]); } \
     const h = glmtoolChat.history(); \
     return {classes: a.className, stats: a.querySelector('.stats').textContent, \
             end: b.textContent.slice(-12), depth: max, \
             status: document.getElementById('status').textContent, \
             history: h.length && h[h.length - 1].content, \
             cards: a.querySelectorAll('details.tool-call').length, \
             error: (a.querySelector('.body > p:last-child') || {}).textContent, \
             retry: !!a.querySelector('button.retry')};";

/// Issue 19 on the page itself: replies that froze it, and what the last render used to erase.
fn scripted_replies(b: &Browser) {
    b.js(SCRIPTED_FETCH);
    let bound = depth_bound(b);
    // Replies that threw "Maximum call stack size exceeded" and left the page "Generating…",
    // streamed over many frames.
    for (what, text, size) in [
        ("5,000 '>'", "'>'.repeat(5000) + ' deep'", 250),
        (
            "a 20 KB list nested 1,000 deep",
            "Array.from({length: 10}, () => '- '.repeat(1000) + 'deep').join('\\n')",
            500,
        ),
    ] {
        b.js(&format!(
            "window.expected = {text}; \
             window.scripted.push({{events: window.reply(window.expected, {size}), delay: 4}}); \
             return true;"
        ));
        b.keys("#input", &format!("{what}{ENTER}"));
        b.wait(what, REPLY_DONE, 30);
        let r = b.js(LAST_REPLY_DEEP);
        assert!(
            !r["classes"].as_str().unwrap().contains("error") && r["stats"] != "",
            "{what}: {r}"
        );
        assert_eq!(r["status"], "", "{what}");
        assert!(r["end"].as_str().unwrap().ends_with("deep"), "{what}: {r}");
        assert!(r["depth"].as_u64().unwrap() <= bound, "{what}: {r}");
        assert_eq!(
            r["history"],
            b.js("return window.expected;"),
            "{what}: the reply is in the conversation"
        );
    }

    // A tool call after some text, and a stream's error after some text, all in one network
    // read: the render queued for the next frame must not erase the card or the error that
    // the final render's caller appends.
    b.js(
        "const d = (delta, finish) => ({choices: [{index: 0, delta, finish_reason: finish || null}]}); \
         window.scripted.push({events: window.reply('Let me look **that** up.', 7, [ \
           d({tool_calls: [{index: 0, id: 'call_x', type: 'function', \
             function: {name: 'lookup', arguments: '{\"q\": 1}'}}]}), d({}, 'tool_calls'), '[DONE]'])}); \
         window.scripted.push({events: window.reply('Half a', 3, \
           [{error: {message: 'boom: the model failed'}}])}); \
         return true;",
    );
    b.keys("#input", &format!("look it up{ENTER}"));
    b.wait("the tool-call reply", REPLY_DONE, 20);
    b.js("window.frames(5); return true;");
    b.wait(
        "five animation frames",
        "return window.framesSeen >= 5;",
        10,
    );
    let r = b.js(LAST_REPLY_DEEP);
    assert_eq!(r["cards"], 1, "the tool-call card is kept: {r}");
    assert!(
        b.js("return [...document.querySelectorAll('.msg.assistant .body')].pop().textContent;")
            .as_str()
            .unwrap()
            .starts_with("Let me look that up."),
        "{r}"
    );
    b.keys("#input", &format!("and now fail{ENTER}"));
    b.wait("the failed reply", REPLY_DONE, 20);
    b.js("window.frames(5); return true;");
    b.wait(
        "five animation frames",
        "return window.framesSeen >= 5;",
        10,
    );
    let r = b.js(LAST_REPLY_DEEP);
    assert!(r["classes"].as_str().unwrap().contains("error"), "{r}");
    assert_eq!(
        r["error"], "boom: the model failed",
        "the error is kept: {r}"
    );
    assert_eq!(r["retry"], true, "{r}");
    assert_eq!(r["status"], "boom: the model failed");
}

// ---------------------------------------------------------------- saved conversations

/// The messages on the page (a failed reply, never part of the conversation, left out): class,
/// text, stats line; and the conversation as the API gets it.
const SHOWN: &str = "return {messages: [...document.querySelectorAll('.msg:not(.error)')].map(m => \
       [m.className, m.querySelector('.body').textContent, (m.querySelector('.stats') || {}).textContent || '']), \
     history: glmtoolChat.history()};";

/// The saved conversations in the sidebar: titles, and which one is open.
const CHAT_LIST: &str = "return {titles: [...document.querySelectorAll('#chat-list li .open')].map(b => b.textContent), \
       current: (document.querySelector('#chat-list li.current .open') || {}).textContent || null, \
       marked: document.querySelectorAll('#chat-list [aria-current=\"true\"]').length};";

/// How many requests the server has logged.
fn requests(s: &common::Server) -> usize {
    s.log.lock().unwrap().matches("request id=").count()
}

/// Issues 20 and 23: while a request waits for a free slot, the page says the server is busy
/// with others, then goes back to "Generating…" with the first token. The busy server is
/// stubbed in the page (its /health says every slot is taken and a request waits, and the chat
/// request starts 2.5 s late): the demo model answers too fast to keep a real slot busy.
fn waiting_for_a_slot(b: &Browser) {
    b.js("window.__fetch = window.fetch;           window.fetch = async (u, o) => {             if (String(u).endsWith('/health')) return new Response(JSON.stringify(               {status: 'ok', slots_idle: 0, slots_processing: 4, requests_deferred: 1}),               {status: 200, headers: {'Content-Type': 'application/json'}});             if (String(u).includes('/v1/chat/completions'))               await new Promise(r => setTimeout(r, 2500));             return window.__fetch(u, o); };");
    b.keys("#input", &format!("Are you busy?{ENTER}"));
    b.wait(
        "the waiting notice",
        "return document.getElementById('status').textContent.startsWith(           'Waiting for a free slot: the server is answering 4 other requests');",
        10,
    );
    b.wait("the reply after waiting", REPLY_DONE, 20);
    let status = b.js("return document.getElementById('status').textContent;");
    assert!(!status.as_str().unwrap().contains("Waiting"), "{status}");
    b.js("window.fetch = window.__fetch; return true;");
}

/// Issue 23: a reload keeps the conversation; the list of conversations (open, rename, export,
/// delete); per message: copy, edit and send again, regenerate.
fn conversations(b: &Browser, s: &common::Server) {
    b.click("#new-chat");
    assert_eq!(b.js(COUNTS), json!([0, 0]));
    b.keys("#input", &format!("Hello there{ENTER}"));
    b.wait("the reply to Hello there", REPLY_DONE, 20);
    let shown = b.js(SHOWN);
    assert_eq!(shown["history"].as_array().unwrap().len(), 2, "{shown}");
    assert!(
        shown["messages"][1][2]
            .as_str()
            .unwrap()
            .contains("tokens/s"),
        "{shown}"
    );
    let list = b.js(CHAT_LIST);
    assert_eq!(list["current"], "Hello there", "{list}");
    assert_eq!(list["marked"], 1, "{list}");
    let n_chats = list["titles"].as_array().unwrap().len();
    assert!(n_chats >= 3, "the earlier conversations are listed: {list}");

    // A reload shows the same messages, stats lines included, and sends the same history.
    b.post("/refresh", json!({}));
    b.wait(
        "the model name after a reload",
        "return document.getElementById('model').textContent === 'tiny-chatglm3';",
        20,
    );
    assert_eq!(b.js(SHOWN), shown, "after a reload");
    assert_eq!(b.js(CHAT_LIST), list, "after a reload");

    // Rename (Enter keeps the name; it survives a reload).
    b.click("#chat-list li.current .rename");
    assert_eq!(
        b.js("return document.activeElement.className;"),
        "rename-input"
    );
    b.keys("#chat-list .rename-input", &format!("Greetings{ENTER}"));
    assert_eq!(b.js(CHAT_LIST)["current"], "Greetings");
    b.post("/refresh", json!({}));
    b.wait(
        "the renamed conversation after a reload",
        "return (document.querySelector('#chat-list li.current .open') || {}).textContent === 'Greetings';",
        20,
    );

    // Open another conversation and come back.
    b.click("#chat-list li:not(.current) .open");
    let other = b.js(SHOWN);
    assert_ne!(other["history"], shown["history"], "another conversation");
    assert_ne!(b.js(CHAT_LIST)["current"], "Greetings");
    b.click("#chat-list li[data-id] .open[title='Greetings']");
    assert_eq!(b.js(SHOWN), shown, "back to the first");

    // Export: the JSON file the button offers (its download caught in the page).
    b.js("window.exportedText = null; \
          URL.createObjectURL = (blob) => { blob.text().then(t => { window.exportedText = t; }); return 'blob:test'; }; \
          URL.revokeObjectURL = () => {}; \
          HTMLAnchorElement.prototype.click = function () { window.downloadName = this.download; }; \
          return true;");
    b.click("#export-chat");
    let text = b.wait("the exported file", "return window.exportedText;", 10);
    let exported: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert_eq!(exported["format"], "glmtool-chat");
    assert_eq!(exported["title"], "Greetings");
    assert_eq!(exported["model"], "tiny-chatglm3");
    assert_eq!(exported["messages"][0]["content"], "Hello there");
    assert_eq!(
        exported["messages"][1]["content"],
        shown["history"][1]["content"]
    );
    assert!(
        exported["messages"][1]["view"]["stats"]
            .as_str()
            .unwrap()
            .contains("tokens/s"),
        "{exported}"
    );
    assert_eq!(b.js("return window.downloadName;"), "Greetings.json");

    // Copy a reply.
    b.js(
        "Object.defineProperty(navigator, 'clipboard', {configurable: true, \
            value: {writeText: async (t) => { window.copied = t; }}}); return true;",
    );
    b.click(".msg.assistant .copy-msg");
    b.wait(
        "the copied reply",
        "return window.copied !== undefined;",
        10,
    );
    assert_eq!(
        b.js("return window.copied;"),
        shown["history"][1]["content"]
    );

    // Regenerate the last reply: a new request, the same (greedy) text in its place.
    let before = requests(s);
    b.js("document.querySelector('.msg.assistant').dataset.old = '1'; return true;");
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('.msg')].map(m => !!m.querySelector('.regen') \
                && getComputedStyle(m.querySelector('.regen')).display !== 'none');"
        ),
        json!([false, true]),
        "Regenerate is offered on the last reply only"
    );
    b.click(".msg.assistant .regen");
    b.wait(
        "the regenerated reply",
        &format!(
            "return !document.querySelector('.msg.assistant[data-old]') && (() => {{ {REPLY_DONE} }})();"
        ),
        20,
    );
    let regenerated = b.js(SHOWN);
    assert_eq!(
        regenerated["history"], shown["history"],
        "--temp 0: the same reply"
    );
    assert_eq!(b.js(COUNTS), json!([1, 1]));
    assert_eq!(requests(s), before + 1);

    // Edit the user message and send it again: everything after it is replaced.
    b.click(".msg.user .edit");
    assert_eq!(
        b.js("return document.activeElement.className;"),
        "edit",
        "the edit box has the focus"
    );
    b.clear(".msg.user .edit-box textarea");
    b.keys(
        ".msg.user .edit-box textarea",
        &format!("Hello again{ENTER}"),
    );
    b.wait("the reply to the edited message", REPLY_DONE, 20);
    let edited = b.js(SHOWN);
    assert_eq!(b.js(COUNTS), json!([1, 1]));
    assert_eq!(
        edited["history"][0],
        json!({"role": "user", "content": "Hello again"})
    );
    assert_eq!(edited["messages"][0][1], "Hello again");
    assert_eq!(requests(s), before + 2);
    b.post("/refresh", json!({}));
    b.wait(
        "the edited conversation after a reload",
        "return document.querySelectorAll('.msg').length === 2;",
        20,
    );
    assert_eq!(b.js(SHOWN), edited, "the edit is saved");
    assert_eq!(b.js(CHAT_LIST)["current"], "Greetings");

    // Delete: the first click arms the button, the second deletes; deleting the open one opens
    // an empty conversation.
    let id = b.js("return document.querySelector('#chat-list li:not(.current)').dataset.id;");
    let id = id.as_str().unwrap();
    b.click(&format!("#chat-list li[data-id='{id}'] .delete"));
    assert_eq!(
        b.js(&format!(
            "return document.querySelector(\"#chat-list li[data-id='{id}'] .delete\").textContent;"
        )),
        "Delete?"
    );
    b.click(&format!("#chat-list li[data-id='{id}'] .delete"));
    assert_eq!(
        b.js(CHAT_LIST)["titles"].as_array().unwrap().len(),
        n_chats - 1
    );
    assert_eq!(
        b.js(&format!(
            "return localStorage.getItem('glmtool.chat.{id}');"
        )),
        Value::Null,
        "the deleted conversation is gone from storage"
    );
    b.click("#chat-list li.current .delete");
    b.click("#chat-list li.current .delete");
    assert_eq!(b.js(COUNTS), json!([0, 0]));
    let list = b.js(CHAT_LIST);
    assert_eq!(
        list["titles"].as_array().unwrap().len(),
        n_chats - 2,
        "{list}"
    );
    assert_eq!(list["current"], Value::Null, "{list}");
}

/// Issue 23: a phone (390 × 844): after a reply longer than the screen, the message box is
/// still on screen (the conversation scrolls, not the page) and the model's name is whole.
fn mobile_layout(b: &Browser) {
    b.post(
        "/goog/cdp/execute",
        json!({"cmd": "Emulation.setDeviceMetricsOverride",
               "params": {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}}),
    );
    b.post("/refresh", json!({}));
    b.wait(
        "the model name on a phone",
        "return document.getElementById('model').textContent === 'tiny-chatglm3';",
        20,
    );
    b.js("const s = document.getElementById('settings'); \
          if (s.hidden) document.getElementById('toggle-settings').click(); return true;");
    b.clear("#max-tokens");
    b.keys("#max-tokens", "300");
    // Panels are closed, as on a phone one would.
    b.js("for (const id of ['toggle-settings', 'toggle-chats']) { \
            const t = document.getElementById(id); \
            if (t.getAttribute('aria-expanded') === 'true') t.click(); } return true;");
    b.keys("#input", &format!("Tell me a long story{ENTER}"));
    b.wait("the long reply on a phone", REPLY_DONE, 30);
    let layout = b.js(
        "const r = (id) => document.getElementById(id).getBoundingClientRect(); \
         const m = document.getElementById('model'), d = document.documentElement, \
               msgs = document.getElementById('messages'); \
         return {width: innerWidth, height: innerHeight, \
           page_fits: d.scrollWidth <= innerWidth && d.scrollHeight <= innerHeight, \
           composer_on_screen: r('composer').bottom <= innerHeight && r('input').top >= 0, \
           model_whole: m.scrollWidth <= m.clientWidth && r('model').right <= innerWidth && r('model').left >= 0, \
           reply_longer_than_screen: msgs.scrollHeight > msgs.clientHeight, \
           panels_open: !document.getElementById('settings').hidden || !document.getElementById('chats').hidden};",
    );
    assert_eq!(
        layout,
        json!({"width": 390, "height": 844, "page_fits": true, "composer_on_screen": true,
               "model_whole": true, "reply_longer_than_screen": true, "panels_open": false}),
    );
    let shot = b.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    let path = if std::env::var_os("GLMTOOL_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/chat-mobile.png")
    } else {
        std::env::temp_dir().join("glmtool-chat-mobile.png")
    };
    std::fs::write(&path, &shot).unwrap();
    eprintln!("screenshot: {}", path.display());
    b.post(
        "/goog/cdp/execute",
        json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}}),
    );
}
