//! `glmtool serve` over HTTP on 127.0.0.1 (ephemeral ports), against a real server process on
//! the bundled demo model. The model's text is nonsense, so these tests check the protocol
//! shape only: response objects, SSE framing, usage counts, errors and status codes, queuing,
//! cancellation and shutdown. Every request has a timeout; every server is killed on drop.

#![cfg(feature = "server")]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{agent, cache, Server};

fn server(extra: &[&str]) -> Server {
    common::server(cache(), extra)
}

/// A client that streams a chat request, reads `events` of its SSE events, and disconnects.
fn leave_after(s: &Server, body: Value, events: usize) {
    let resp = agent()
        .post(&format!("{}/v1/chat/completions", s.base))
        .send_json(body)
        .unwrap();
    let mut reader = BufReader::new(resp.into_reader());
    let mut line = String::new();
    let mut seen = 0;
    while seen < events {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        seen += line.starts_with("data: ") as usize;
    }
}

/// POSTs `body` (a string, sent as is); returns (status, parsed JSON).
fn post(s: &Server, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = agent()
        .post(&format!("{}{path}", s.base))
        .set("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let resp = match req.send_string(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}"));
    (status, v)
}

fn get(s: &Server, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = agent().get(&format!("{}{path}", s.base));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    (resp.status(), resp.into_json().unwrap())
}

/// The `data:` payloads of an SSE response, up to and including `[DONE]`.
fn sse(s: &Server, path: &str, body: &Value) -> Vec<String> {
    let resp = agent()
        .post(&format!("{}{path}", s.base))
        .send_json(body.clone())
        .unwrap();
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let mut out = Vec::new();
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            out.push(d.to_string());
            if d == "[DONE]" {
                break;
            }
        } else {
            assert!(line.is_empty() || line.starts_with(':'), "{line:?}");
        }
    }
    assert_eq!(out.last().map(String::as_str), Some("[DONE]"));
    out
}

fn check_usage(v: &Value) -> (u64, u64) {
    let u = &v["usage"];
    let (p, c) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c, "{v}");
    (p, c)
}

#[test]
fn chat_streaming_and_not_agree_and_completions_work() {
    let s = server(&[]);
    let (st, h) = get(&s, "/health", None);
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")));
    let (st, m) = get(&s, "/v1/models", None);
    assert_eq!(st, 200);
    assert_eq!(m["data"][0]["object"], "model");

    let req = json!({"model": "x", "messages": [{"role": "user", "content": "Tell me a fortune"}],
                     "max_tokens": 10, "temperature": 0, "seed": 7});
    let (st, v) = post(&s, "/v1/chat/completions", &req.to_string(), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap().to_string();
    assert_eq!(choice["finish_reason"], "length"); // greedy demo model does not stop in 10
    assert_eq!(check_usage(&v), (13, 10));

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let events = sse(&s, "/v1/chat/completions", &sreq);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let fin = &chunks[chunks.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    assert_eq!(check_usage(&chunks[chunks.len() - 1]), (13, 10));

    // A stop sequence taken from the reply ends it early, excluded, as "stop".
    let cut: String = content.chars().skip(2).take(2).collect();
    if !cut.trim().is_empty() {
        let mut r = req.clone();
        r["stop"] = json!([cut]);
        let (_, v) = post(&s, "/v1/chat/completions", &r.to_string(), None);
        let c = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            content.starts_with(c) && c.len() < content.len(),
            "{c:?} vs {content:?}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    // Plain completions, both ways.
    let creq = json!({"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0});
    let (st, v) = post(&s, "/v1/completions", &creq.to_string(), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(check_usage(&v).1, 6);
    let mut screq = creq.clone();
    screq["stream"] = json!(true);
    let events = sse(&s, "/v1/completions", &screq);
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, text);
}

#[test]
fn tools_round_trip_maps_like_the_chatglm3_history() {
    let s = server(&[]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Get the current weather for `city_name`",
        "parameters": {"type": "object", "properties": {"city_name": {"type": "string"}}, "required": ["city_name"]}}}]);
    let first = json!({"messages": [{"role": "user", "content": "今天北京的天气怎么样？"}],
                       "tools": tools, "max_tokens": 8, "temperature": 0});
    let (st, v) = post(&s, "/v1/chat/completions", &first.to_string(), None);
    assert_eq!(st, 200, "{v}");
    let msg = &v["choices"][0]["message"];
    if let Some(calls) = msg["tool_calls"].as_array() {
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        for c in calls {
            let args = c["function"]["arguments"].as_str().unwrap();
            assert!(serde_json::from_str::<Value>(args).unwrap().is_object());
        }
    } else {
        assert!(msg["content"].is_string());
    }
    let (p_tools, _) = check_usage(&v);

    // Scripted tool call and result, as a client sends them back.
    let second = json!({"messages": [
        {"role": "user", "content": "今天北京的天气怎么样？"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city_name\": \"北京\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": \"12°C\", \"weather\": \"晴\"}"}
    ], "tools": tools, "max_tokens": 4, "temperature": 0});
    let (st, v) = post(&s, "/v1/chat/completions", &second.to_string(), None);
    assert_eq!(st, 200, "{v}");
    let (p_second, _) = check_usage(&v);

    // The same conversation in ChatGLM3's format, through `glmtool tokenize --chat`.
    let history = json!([
        {"role": "system", "content": "Answer the following questions as best as you can. You have access to the following tools:",
         "tools": [tools[0]["function"]]},
        {"role": "user", "content": "今天北京的天气怎么样？"},
        {"role": "assistant", "metadata": "get_weather", "content": "```python\ntool_call(city_name='北京')\n```"},
        {"role": "observation", "content": "{\"temperature\": \"12°C\", \"weather\": \"晴\"}"}
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.json");
    std::fs::write(&path, history.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_glmtool"))
        .args(["tokenize", "--chat", path.to_str().unwrap()])
        .env("GLMTOOL_CACHE", cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p_second as usize, ids.len());

    // tool_choice "none" leaves the tools out of the prompt.
    let mut none = first.clone();
    none["tool_choice"] = json!("none");
    let (_, v) = post(&s, "/v1/chat/completions", &none.to_string(), None);
    assert!(check_usage(&v).0 < p_tools);
    // A forced function leaves the prompt as it is: the grammar makes the reply call it
    // (tests/structured.rs checks the calls themselves).
    let mut forced = first.clone();
    forced["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let (st, v) = post(&s, "/v1/chat/completions", &forced.to_string(), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(check_usage(&v).0, p_tools);
    if v["choices"][0]["finish_reason"] == "tool_calls" {
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
    }
}

#[test]
fn eight_concurrent_clients_and_a_client_that_leaves_mid_stream() {
    let s = Arc::new(server(&[]));
    // A client that reads two events of a long reply with two choices, then disconnects.
    leave_after(
        &s,
        json!({"messages": [{"role": "user", "content": "Hi"}], "stream": true,
               "temperature": 0, "n": 2}),
        2,
    );

    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let body = json!({"messages": [{"role": "user", "content": format!("fortune {i}")}],
                                  "max_tokens": 5, "stream": i % 2 == 1});
                if i % 2 == 1 {
                    let ev = sse(&s, "/v1/chat/completions", &body);
                    assert!(ev.len() >= 3, "{ev:?}");
                } else {
                    let (st, v) = post(&s, "/v1/chat/completions", &body.to_string(), None);
                    assert_eq!(st, 200, "{v}");
                    assert_eq!(check_usage(&v).1, 5);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Both abandoned choices were stopped, not run to the end of the context.
    let deadline = Instant::now() + Duration::from_secs(20);
    // (the server logs a request after answering it, so wait for the lines too)
    let done = |log: &str| {
        log.matches("end=cancelled").count() == 2 && log.matches("request id=").count() >= 10
    };
    while !done(&s.log.lock().unwrap()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.log.lock().unwrap().clone();
    assert_eq!(log.matches("end=cancelled").count(), 2, "{log}");
    assert_eq!(log.matches("request id=").count(), 10, "{log}");
    let (st, h) = get(&s, "/health", None);
    assert_eq!((st, h["queued"].as_u64()), (200, Some(0)));
}

#[test]
fn api_key_body_limits_and_bad_requests() {
    let s = server(&["--api-key", "sk-test", "--max-body", "4096"]);
    let ok = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}).to_string();
    let (st, v) = post(&s, "/v1/chat/completions", &ok, None);
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(
        post(&s, "/v1/chat/completions", &ok, Some("sk-wrong")).0,
        401
    );
    assert_eq!(get(&s, "/v1/models", None).0, 401);
    assert_eq!(get(&s, "/health", None).0, 200);
    assert_eq!(
        post(&s, "/v1/chat/completions", &ok, Some("sk-test")).0,
        200
    );

    let big = json!({"messages": [{"role": "user", "content": "x".repeat(10_000)}]}).to_string();
    let (st, v) = post(&s, "/v1/chat/completions", &big, Some("sk-test"));
    assert_eq!(st, 413, "{v}");
    for (body, needle) in [
        ("{\"messages\": [", "malformed JSON body"),
        ("[1]", "JSON object"),
        ("{}", "messages: required"),
        ("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "unknown role"),
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": 9}", "temperature"),
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 0}", "max_tokens"),
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 17}", "n: expected an integer from 1 to 16"),
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"f\"}}}", "no tools"),
        ("{\"prompt\": 3}", "prompt"),
    ] {
        let path = if body.contains("prompt") { "/v1/completions" } else { "/v1/chat/completions" };
        let (st, v) = post(&s, path, body, Some("sk-test"));
        assert_eq!(st, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
    // A prompt longer than the context (512 tokens for the demo model).
    let long =
        json!({"messages": [{"role": "user", "content": "fortune ".repeat(450)}]}).to_string();
    let (st, v) = post(&s, "/v1/chat/completions", &long, Some("sk-test"));
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the context holds 512"),
        "{v}"
    );
    assert_eq!(get(&s, "/nope", Some("sk-test")).0, 404);
}

#[test]
fn sigint_shuts_down_cleanly() {
    let mut s = server(&[]);
    assert_eq!(get(&s, "/health", None).0, 200);
    let st = Command::new("kill")
        .args(["-INT", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still running after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(s.log.lock().unwrap().contains("shutting down"));
}

/// `run --tools/--chat --json`: the prompt is the ChatGLM3 history `tokenize --chat` sees, and
/// the printed `messages` continue it with the reply (so a script can append an observation).
#[test]
fn run_with_tools_and_chat_continues_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.json");
    std::fs::write(
        &tools,
        r#"[{"type": "function", "function": {"name": "get_weather", "description": "天气", "parameters": {}}}]"#,
    )
    .unwrap();
    let glm = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_glmtool"))
            .args(args)
            .env("GLMTOOL_CACHE", cache())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let t = tools.to_str().unwrap();
    let v = glm(&[
        "run", "--tools", t, "-p", "北京?", "-n", "4", "--temp", "0", "--json",
    ]);
    let history = v["messages"].as_array().unwrap();
    assert_eq!(
        history[0]["tools"],
        json!([{"name": "get_weather", "description": "天气", "parameters": {}}])
    );
    assert_eq!(
        history[1],
        json!({"role": "user", "content": "北京?", "metadata": ""})
    );
    assert_eq!(history.len(), 3, "{v}");
    assert_eq!(history[2]["role"], "assistant");
    let first = dir.path().join("first.json");
    std::fs::write(&first, serde_json::to_string(&history[..2]).unwrap()).unwrap();
    let ids = glm(&["tokenize", "--chat", first.to_str().unwrap()]);
    assert_eq!(v["prompt_ids"], ids);

    // Continue with a scripted observation: the prompt is the whole history.
    let mut next = history.clone();
    next[2] = json!({"role": "assistant", "metadata": "get_weather", "content": "```python\ntool_call(city='北京')\n```"});
    next.push(json!({"role": "observation", "content": "{\"weather\": \"晴\"}", "metadata": ""}));
    let hist = dir.path().join("history.json");
    std::fs::write(&hist, serde_json::to_string(&next).unwrap()).unwrap();
    let v2 = glm(&[
        "run",
        "--chat",
        hist.to_str().unwrap(),
        "--tools",
        t,
        "-n",
        "2",
        "--temp",
        "0",
        "--json",
    ]);
    assert_eq!(
        v2["prompt_ids"],
        glm(&["tokenize", "--chat", hist.to_str().unwrap()])
    );
    let out = v2["messages"].as_array().unwrap();
    assert_eq!(out[..4], next[..], "{v2}");
}

/// Clients that never finish their headers (and idle keep-alive connections) are closed after
/// --header-timeout; at most --max-connections are served at once, and a well-behaved client
/// is served again as soon as the slow ones are gone.
#[test]
fn slow_clients_time_out_and_connections_are_capped() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let s = server(&["--header-timeout", "1", "--max-connections", "4"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // 6 clients that send half a request line and wait
    let mut slow: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c
        })
        .collect();
    // the first 4 are accepted and closed by the header timeout; the other 2 wait in the
    // backlog until a slot frees, then time out too: every read ends (EOF or reset), none hangs
    let t = Instant::now();
    for c in &mut slow {
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            n == 0 || text.starts_with("HTTP/1.1 408"),
            "a slow client got {text:?}"
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "slow clients held on for {:?}",
        t.elapsed()
    );
    // a normal client is served
    let (code, v) = get(&s, "/health", None);
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")));
    // an idle keep-alive connection is closed too
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut all = Vec::new();
    let t = Instant::now();
    let closed = c.read_to_end(&mut all).is_ok(); // Ok at EOF: the server closed it
    assert!(
        closed && t.elapsed() < Duration::from_secs(15),
        "idle connection kept {:?}",
        t.elapsed()
    );
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    assert!(s
        .log
        .lock()
        .unwrap()
        .contains("4 connections, 1 s to send headers"));
}

#[test]
fn glm4_chat_with_tools_maps_to_the_chat_template_prompt() {
    let Some(ckpt) = common::glm4_checkpoint() else {
        return;
    };
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/glm4/golden_chat.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let case = &golden["conversations"]["tool_call"];
    let want = case["ids"].as_array().unwrap().len() as u64;
    let m = &case["messages"];
    let tools = m[0]["tools"].clone();
    let s = server(&["-m", ckpt.path().to_str().unwrap(), "--type", "f16"]);
    // the same conversation as an OpenAI request: tools, a user turn, the call, its result
    let body = json!({
        "messages": [
            {"role": "user", "content": m[1]["content"]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": m[2]["metadata"], "arguments": m[2]["content"]}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": m[3]["content"]},
        ],
        "tools": tools,
        "max_tokens": 3,
    });
    let (status, v) = post(&s, "/v1/chat/completions", &body.to_string(), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], want, "{v}");
    // a plain chat stops on GLM-4's ids and reports a sane reply
    let (status, v) = post(
        &s,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}).to_string(),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4);
}

#[test]
fn cors_preflight_usage_details_and_timings() {
    let origin = "http://localhost:3000";
    let s = server(&["--cors-origin", origin, "--api-key", "k"]);
    // the preflight is answered before authentication
    let r = agent()
        .request("OPTIONS", &format!("{}/v1/chat/completions", s.base))
        .set("Origin", origin)
        .set("Access-Control-Request-Method", "POST")
        .call()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(origin));
    assert!(r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Authorization"));
    // a request from that origin carries the header; another origin gets none
    let body =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}).to_string();
    let call = |o: &str| {
        agent()
            .post(&format!("{}/v1/chat/completions", s.base))
            .set("Origin", o)
            .set("Authorization", "Bearer k")
            .set("Content-Type", "application/json")
            .send_string(&body)
            .unwrap()
    };
    let r = call(origin);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(origin));
    let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert!(
        v["timings"]["predicted_per_second"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(call("http://evil.example")
        .header("Access-Control-Allow-Origin")
        .is_none());
    // the same prompt again: its tokens come from the KV cache (all but the last one)
    let v: Value = serde_json::from_str(&call(origin).into_string().unwrap()).unwrap();
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"],
        prompt - 1,
        "{v}"
    );
    // without the flag there are no CORS headers
    let plain = server(&[]);
    let r = agent()
        .post(&format!("{}/v1/chat/completions", plain.base))
        .set("Origin", origin)
        .set("Content-Type", "application/json")
        .send_string(&body)
        .unwrap();
    assert!(r.header("Access-Control-Allow-Origin").is_none());
}

#[test]
fn logprobs_for_chat_and_completions() {
    let s = server(&[]);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
        "logprobs": true, "top_logprobs": 2});
    let (status, v) = post(&s, "/v1/chat/completions", &body.to_string(), None);
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    for e in content {
        let lp = e["logprob"].as_f64().unwrap();
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert!(
            lp <= 0.0 && top[0]["logprob"].as_f64().unwrap() >= top[1]["logprob"].as_f64().unwrap()
        );
        // greedy (--temp 0): the chosen token is the most likely one
        assert_eq!(e["token"], top[0]["token"], "{e}");
        assert_eq!(lp, top[0]["logprob"].as_f64().unwrap());
        assert!(e["bytes"].is_array());
    }
    // not asked: null
    let (_, v) = post(
        &s,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string(),
        None,
    );
    assert!(v["choices"][0]["logprobs"].is_null());
    // streamed: the entries ride on the chunks, all of them by the end
    let mut body = body.clone();
    body["stream"] = json!(true);
    let lines = sse(&s, "/v1/chat/completions", &body);
    let n: usize = lines
        .iter()
        .filter(|l| *l != "[DONE]")
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|c| {
            c["choices"][0]["logprobs"]["content"]
                .as_array()
                .map(Vec::len)
        })
        .sum();
    assert_eq!(n, 5);
    // the legacy completions format
    let (status, v) = post(
        &s,
        "/v1/completions",
        &json!({"prompt": "Once upon", "max_tokens": 4, "logprobs": 3}).to_string(),
        None,
    );
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 4);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 4);
    assert_eq!(
        lp["top_logprobs"][0].as_object().unwrap().len().min(3),
        lp["top_logprobs"][0].as_object().unwrap().len()
    );
    assert_eq!(lp["text_offset"][0], 0);
}

/// `--context-shift` (llama-server's flag, `run`'s policy): a chat longer than the context loses
/// its oldest whole turns, never the system message or the last turn, and the response says so
/// (`"truncated": true`, the x-context-dropped-messages header); without the flag it is a 400.
#[test]
fn context_shift_drops_the_oldest_turns_and_says_so() {
    let long = "the quick brown fox jumps over the lazy dog ".repeat(6);
    let mut messages = vec![json!({"role": "system", "content": "be brief"})];
    for i in 0..4 {
        messages.push(json!({"role": "user", "content": format!("{i}: {long}")}));
        messages.push(json!({"role": "assistant", "content": format!("{i}: {long}")}));
    }
    messages.push(json!({"role": "user", "content": "and now?"}));
    let body = json!({"messages": messages, "max_tokens": 8, "temperature": 0}).to_string();
    let plain = server(&["-c", "160"]);
    let (status, v) = post(&plain, "/v1/chat/completions", &body, None);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("but the context holds 160"),
        "{v}"
    );
    let shifted = server(&["-c", "160", "--context-shift"]);
    let resp = agent()
        .post(&format!("{}/v1/chat/completions", shifted.base))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .unwrap();
    let dropped: usize = resp
        .header("x-context-dropped-messages")
        .expect("the header")
        .parse()
        .unwrap();
    let v: Value = resp.into_json().unwrap();
    assert_eq!(v["truncated"], json!(true), "{v}");
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    // whole turns (user + assistant), the oldest first, until the reply's 8 tokens fit
    assert!(
        dropped.is_multiple_of(2) && (2..=8).contains(&dropped),
        "{dropped}"
    );
    assert!(prompt + 8 <= 160, "{prompt}");
    // streaming: the same header
    let resp = agent()
        .post(&format!("{}/v1/chat/completions", shifted.base))
        .set("Content-Type", "application/json")
        .send_string(&body.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\""))
        .unwrap();
    assert_eq!(
        resp.header("x-context-dropped-messages"),
        Some(dropped.to_string().as_str())
    );
    // a chat that fits is not marked
    let short = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let (status, v) = post(&shifted, "/v1/chat/completions", &short.to_string(), None);
    assert_eq!(status, 200);
    assert!(v.get("truncated").is_none(), "{v}");
}

/// The text of a chat or completion request: non-streaming `choices[0]`, or the streamed deltas
/// joined (tool calls included, as their JSON).
fn reply_text(s: &Server, path: &str, body: &Value) -> String {
    if body["stream"] == json!(true) {
        let mut out = String::new();
        for e in sse(s, path, body) {
            let Ok(v) = serde_json::from_str::<Value>(&e) else {
                continue; // [DONE]
            };
            let c = &v["choices"][0];
            for x in [&c["delta"]["content"], &c["text"]] {
                out.push_str(x.as_str().unwrap_or_default());
            }
            if !c["delta"]["tool_calls"].is_null() {
                out.push_str(&c["delta"]["tool_calls"].to_string());
            }
        }
        out
    } else {
        let (st, v) = post(s, path, &body.to_string(), None);
        assert_eq!(st, 200, "{v}");
        let c = &v["choices"][0];
        format!(
            "{}{}{}",
            c["message"]["content"].as_str().unwrap_or_default(),
            c["text"].as_str().unwrap_or_default(),
            if c["message"]["tool_calls"].is_null() {
                String::new()
            } else {
                c["message"]["tool_calls"].to_string()
            }
        )
    }
}

/// The value of a Prometheus sample line `name{labels} value` (the first with that name).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn slots_batch_requests_without_changing_their_text_and_metrics_add_up() {
    let s = Arc::new(server(&["--parallel", "4", "--metrics"]));
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather of a city", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    // eight requests of mixed lengths: chats and completions, streaming and not, with tools
    let reqs: Vec<(&str, Value)> = (0..8)
        .map(|i| {
            let words = "lorem ipsum dolor sit amet ".repeat(1 + 7 * (i % 3));
            let mut body = if i % 4 == 3 {
                json!({"prompt": format!("{i} {words}"), "max_tokens": 6 + 3 * i})
            } else {
                json!({"messages": [{"role": "user", "content": format!("{i} {words}")}],
                       "max_tokens": 6 + 3 * i})
            };
            body["stream"] = json!(i % 2 == 1);
            if i % 4 == 2 {
                body["tools"] = tools.clone();
            }
            let path = if i % 4 == 3 {
                "/v1/completions"
            } else {
                "/v1/chat/completions"
            };
            (path, body)
        })
        .collect();
    // alone, one after the other
    let alone: Vec<String> = reqs.iter().map(|(p, b)| reply_text(&s, p, b)).collect();
    assert!(alone.iter().any(|t| !t.is_empty()));
    // the model thread updates the gauges after the step that answered, and the test reads the
    // server's log asynchronously: wait for both
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let r = agent().get(&format!("{}/metrics", s.base)).call().unwrap();
        assert_eq!(r.status(), 200);
        let m = r.into_string().unwrap();
        let logged = s.log.lock().unwrap().matches("request id=").count();
        if (logged == 8 && sample(&m, "llamacpp:requests_processing") == 0.0)
            || Instant::now() > deadline
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // every sample line parses; the counters add up to the eight requests
    for l in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        v.parse::<f64>().unwrap_or_else(|_| panic!("{l}"));
    }
    assert_eq!(sample(&m, "glmtool:requests_total"), 8.0);
    let generated: f64 = {
        let log = s.log.lock().unwrap();
        log.lines()
            .filter_map(|l| l.split(" generated_tokens=").nth(1))
            .map(|r| r.split(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(sample(&m, "llamacpp:tokens_predicted_total"), generated);
    assert!(sample(&m, "llamacpp:prompt_tokens_total") > 0.0);
    assert_eq!(sample(&m, "llamacpp:requests_processing"), 0.0);

    // the same eight at once, plus two clients that leave in the middle of their streams
    let leavers: Vec<_> = (0..2)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                leave_after(
                    &s,
                    json!({"messages": [{"role": "user", "content": format!("leave {i}")}],
                           "stream": true}),
                    3,
                );
            })
        })
        .collect();
    let together: Vec<_> = reqs
        .iter()
        .cloned()
        .map(|(p, b)| {
            let s = s.clone();
            std::thread::spawn(move || reply_text(&s, p, &b))
        })
        .collect();
    for (i, h) in together.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            alone[i],
            "request {i}: batched differs from alone"
        );
    }
    for h in leavers {
        h.join().unwrap();
    }
    // the leavers' slots were freed: every slot goes idle, and more than one slot took part
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, slots) = get(&s, "/slots", None);
        let slots = slots.as_array().unwrap().clone();
        assert_eq!(slots.len(), 4);
        if slots.iter().all(|x| x["is_processing"] == json!(false)) {
            assert!(
                slots
                    .iter()
                    .filter(|x| x["n_cached"].as_u64().unwrap() > 0)
                    .count()
                    > 1
            );
            break;
        }
        assert!(Instant::now() < deadline, "slots still busy: {slots:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = agent().get(&format!("{}/metrics", s.base)).call().unwrap();
    let m = r.into_string().unwrap();
    assert_eq!(sample(&m, "glmtool:requests_total"), 18.0);
    assert!(sample(&m, "llamacpp:n_busy_slots_per_decode") > 1.0, "{m}");
    // (whether the leavers are cancelled before the end depends on how soon the server sees
    // the closed connection: the demo model writes its 500 tokens in a fraction of a second;
    // eight_concurrent_clients_and_a_client_that_leaves_mid_stream checks the cancellation)
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("slots: 4, each with a context of"), "{log}");
    let (st, h) = get(&s, "/health?fail_on_no_slot=1", None);
    assert_eq!((st, h["slots_idle"].as_u64()), (200, Some(4)));
}

/// `key=value` fields of the server's request log lines, in order.
fn request_lines(s: &Server, at_least: usize) -> Vec<std::collections::HashMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = s.log.lock().unwrap().clone();
        let lines: Vec<_> = log
            .lines()
            .filter(|l| l.starts_with("request id="))
            .map(|l| {
                l.split(' ')
                    .skip(1)
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        if lines.len() >= at_least || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn n_choices_share_the_prompt_stream_side_by_side_and_their_usage_adds_up() {
    let s = server(&["--parallel", "3"]);
    let body = json!({"messages": [{"role": "user", "content": "Tell me a fortune"}],
                      "max_tokens": 12, "temperature": 0.8, "seed": 5, "n": 3});
    let (st, v) = post(&s, "/v1/chat/completions", &body.to_string(), None);
    assert_eq!(st, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(
        choices
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let lines = request_lines(&s, 3);
    assert_eq!(lines.len(), 3);
    let num =
        |l: &std::collections::HashMap<String, String>, k: &str| -> u64 { l[k].parse().unwrap() };
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(lines.iter().all(|l| num(l, "prompt_tokens") == prompt));
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        lines
            .iter()
            .map(|l| num(l, "generated_tokens"))
            .sum::<u64>()
    );
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        prompt + v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    // one choice read the prompt; the other two copied its cache and read its last token only
    let mut cached: Vec<u64> = lines.iter().map(|l| num(l, "cached_tokens")).collect();
    cached.sort_unstable();
    assert_eq!(cached, [0, prompt - 1, prompt - 1], "{lines:?}");
    // choice 0 is the request alone (the same seed): batching changed nothing
    let mut one = body.clone();
    one["n"] = json!(1);
    let (_, alone) = post(&s, "/v1/chat/completions", &one.to_string(), None);
    assert_eq!(alone["choices"][0]["message"], choices[0]["message"]);
    // streamed, the three choices interleave, told apart by index: each is the text above, and
    // the usage chunk after them all adds up the same
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let events = sse(&s, "/v1/chat/completions", &sb);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut streamed = [String::new(), String::new(), String::new()];
    let mut roles = [0, 0, 0];
    let mut finishes = [0, 0, 0];
    for c in &chunks[..chunks.len() - 1] {
        let ch = &c["choices"][0];
        let i = ch["index"].as_u64().unwrap() as usize;
        assert_eq!(finishes[i], 0, "a chunk of choice {i} after its end: {c}");
        roles[i] += ch["delta"]["role"].is_string() as usize;
        finishes[i] += ch["finish_reason"].is_string() as usize;
        streamed[i].push_str(ch["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!((roles, finishes), ([1, 1, 1], [1, 1, 1]), "{chunks:?}");
    for (i, text) in streamed.iter().enumerate() {
        assert_eq!(
            text,
            choices[i]["message"]["content"].as_str().unwrap(),
            "choice {i}"
        );
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().map(Vec::len), Some(0), "{last}");
    // (the prompt is cached by now: compare the counts)
    let counts = |u: &Value| {
        ["prompt_tokens", "completion_tokens", "total_tokens"].map(|k| u[k].as_u64().unwrap())
    };
    assert_eq!(counts(&last["usage"]), counts(&v["usage"]), "{last}");
    // completions too, streamed or not
    let cb = json!({"prompt": "Once", "max_tokens": 4, "n": 2, "temperature": 0.8, "seed": 9});
    let (st, c) = post(&s, "/v1/completions", &cb.to_string(), None);
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["choices"].as_array().unwrap().len(), 2);
    assert_eq!(c["choices"][1]["index"], 1);
    let mut scb = cb.clone();
    scb["stream"] = json!(true);
    scb["stream_options"] = json!({"include_usage": true});
    let events = sse(&s, "/v1/completions", &scb);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut texts = [String::new(), String::new()];
    let mut usages = Vec::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        let ch = &v["choices"][0];
        texts[ch["index"].as_u64().unwrap() as usize].push_str(ch["text"].as_str().unwrap());
        if !v["usage"].is_null() {
            usages.push(v["usage"].clone());
        }
    }
    assert_eq!(texts[0], c["choices"][0]["text"].as_str().unwrap());
    assert_eq!(texts[1], c["choices"][1]["text"].as_str().unwrap());
    assert_eq!(usages.len(), 1, "usage once, on the last chunk: {events:?}");
    assert_eq!(counts(&usages[0]), counts(&c["usage"]));
    // more choices than slots: a 400 naming n
    let mut b = body.clone();
    b["n"] = json!(4);
    let (st, e) = post(&s, "/v1/chat/completions", &b.to_string(), None);
    assert_eq!(st, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("n: at most 3"),
        "{e}"
    );
}

#[test]
fn health_is_503_while_the_model_loads_and_a_failed_load_exits() {
    // a model file that is a FIFO: loading blocks on it until the test writes
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("slow.gguf");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_glmtool"))
        .args(["serve", "--port", "0", "-t", "1", "-m"])
        .arg(&fifo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    for path in ["/health", "/v1/models", "/"] {
        match agent().get(&format!("{base}{path}")).call() {
            Err(ureq::Error::Status(503, r)) => {
                assert_eq!(r.header("retry-after"), Some("1"));
                let v: Value = r.into_json().unwrap();
                assert_eq!(v["error"]["message"], "Loading model", "{path}: {v}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    std::fs::write(&fifo, b"not a gguf file").unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(!status.success(), "{rest}");
    assert!(rest.contains("slow.gguf"), "{rest}");
}

/// The official `openai` Python client reads `n` streamed choices: its chunks carry each
/// choice's index, and what it assembles per index is what the same request returns without
/// streaming. Skipped when no Python with `openai` is found (GLMTOOL_TEST_PYTHON, else python3).
#[test]
fn python_openai_client_streams_n_choices() {
    let Some(python) = common::python_with("openai") else {
        return;
    };
    let s = server(&["--parallel", "2"]);
    let script = r#"
import json, sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
ask = dict(model="demo", messages=[{"role": "user", "content": "Tell me a fortune"}],
           n=2, max_tokens=12, temperature=0.9, seed=11)
whole = client.chat.completions.create(**ask)
texts, finishes, usage = ["", ""], [None, None], None
for chunk in client.chat.completions.create(**ask, stream=True,
                                            stream_options={"include_usage": True}):
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        texts[c.index] += c.delta.content or ""
        if c.finish_reason:
            finishes[c.index] = c.finish_reason
print(json.dumps({
    "streamed": texts, "finishes": finishes,
    "whole": [c.message.content for c in whole.choices],
    "usage": [usage.completion_tokens, whole.usage.completion_tokens],
}))
"#;
    let v: Value = serde_json::from_slice(&common::run_python(&python, script, &s)).unwrap();
    assert_eq!(v["streamed"], v["whole"], "{v}");
    assert_ne!(v["whole"][0], v["whole"][1], "two seeds, two replies: {v}");
    assert!(
        v["finishes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f.is_string()),
        "{v}"
    );
    assert_eq!(v["usage"][0], v["usage"][1], "{v}");
}
