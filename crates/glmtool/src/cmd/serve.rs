//! `glmtool serve`: an OpenAI-compatible HTTP server (axum + tokio).
//!
//! One worker thread owns the model and its `Session` (so the KV-cache prefix is re-used across
//! requests); HTTP handlers turn requests into ChatGLM3 messages (`glm_runtime::agent`) and queue
//! jobs for it. Each job streams events back on its own channel; a handler that goes away (a
//! client that disconnects) closes that channel, which stops the generation at the next token.

use crate::args::{ModelArgs, SamplingArgs};
use crate::INTERRUPTED;
use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use glm_openai::{BadRequest, ChatRequest, CompletionRequest};
use glm_runtime::agent::{parse_reply, parse_reply_glm4, Segment, ToolCall};
use glm_runtime::chat::{build_chat_ids, stop_ids, Message};
use glm_runtime::generate::{generate, StopReason};
use glm_runtime::sampler::{Sampler, SamplerOptions};
use glm_runtime::tokenizer::ChatFormat;
use glm_runtime::Session;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Address to bind (loopback by default; use 0.0.0.0 only behind --api-key and a firewall)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 = any free port; the chosen one is printed)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* requests
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Largest request body in bytes (larger ones get 413)
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Model id reported by /v1/models and in responses (default: the model's general.name)
    #[arg(long)]
    pub alias: Option<String>,
    /// Requests that may wait for the model; more get 503 with Retry-After
    #[arg(long = "max-queue", default_value_t = 16)]
    pub max_queue: usize,
    /// Open connections at most; further clients wait to be accepted
    #[arg(long = "max-connections", default_value_t = 64)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, also on an idle keep-alive connection
    /// (then the connection is closed)
    #[arg(long = "header-timeout", default_value_t = 10)]
    pub header_timeout: u64,
}

// ---------------------------------------------------------------- the model worker

enum Prompt {
    /// A chat; `prefix` (a forced tool name) is appended as the start of the reply.
    Chat {
        messages: Vec<Message>,
        prefix: Option<String>,
    },
    /// Plain text to continue.
    Raw(String),
}

struct Job {
    prompt: Prompt,
    max_tokens: Option<usize>,
    sampler: SamplerOptions,
    stops: Vec<String>,
    tx: mpsc::UnboundedSender<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finish {
    Stop,
    Length,
}

enum Event {
    /// The prompt fits; generation starts.
    Started { prompt_tokens: usize },
    /// The request cannot be served (400).
    Rejected(String),
    /// Decoded text of the next token(s).
    Piece(String),
    Done {
        text: String,
        completion_tokens: usize,
        finish: Finish,
    },
    /// The model failed (500).
    Failed(String),
}

struct ModelInfo {
    name: String,
    n_ctx: usize,
    format: ChatFormat,
}

/// Loads the model on its own thread and serves jobs until the job channel closes.
fn spawn_worker(
    margs: ModelArgs,
    jobs: std_mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
) -> Result<(ModelInfo, std::thread::JoinHandle<()>)> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<ModelInfo, String>>();
    let handle = std::thread::Builder::new()
        .name("model".into())
        .spawn(move || {
            let loaded = margs.load(1, false).and_then(|model| {
                let opts = margs.session_options(&model)?;
                Ok((model, opts))
            });
            let (model, opts) = match loaded {
                Ok(x) => x,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let mut session = match Session::new(&model, &opts) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(ModelInfo {
                name: model.name.clone(),
                n_ctx: session.n_ctx(),
                format: model.tokenizer.chat_format(),
            }));
            for job in jobs {
                queued.fetch_sub(1, Ordering::SeqCst);
                run_job(&model, &mut session, job);
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((info, handle)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(anyhow!(e))
        }
        Err(_) => {
            let _ = handle.join();
            Err(anyhow!("the model thread stopped while loading"))
        }
    }
}

fn run_job(model: &glm_runtime::Model, session: &mut Session, job: Job) {
    let tx = job.tx;
    if tx.is_closed() {
        return; // the client left while queued
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        let _ = tx.send(Event::Failed("the server is shutting down".into()));
        return;
    }
    let tok = &model.tokenizer;
    let (ids, stops, prefix) = match &job.prompt {
        Prompt::Chat { messages, prefix } => {
            let mut ids = match build_chat_ids(tok, messages) {
                Ok(ids) => ids,
                Err(e) => {
                    let _ = tx.send(Event::Rejected(format!(
                        "cannot tokenize the messages: {e}"
                    )));
                    return;
                }
            };
            if let Some(p) = prefix {
                match tok.encode(&format!("{p}\n")) {
                    Ok(x) => ids.extend(x),
                    Err(e) => {
                        let _ = tx.send(Event::Rejected(format!("tool_choice: {e}")));
                        return;
                    }
                }
            }
            (
                ids,
                stop_ids(tok),
                prefix.as_ref().map(|p| format!("{p}\n")),
            )
        }
        Prompt::Raw(text) => match tok.encode(text) {
            Ok(ids) if !ids.is_empty() => (ids, vec![tok.special().eos], None),
            Ok(_) => {
                let _ = tx.send(Event::Rejected("prompt: the prompt is empty".into()));
                return;
            }
            Err(e) => {
                let _ = tx.send(Event::Rejected(format!("cannot tokenize the prompt: {e}")));
                return;
            }
        },
    };
    let n_ctx = session.n_ctx();
    if ids.len() >= n_ctx {
        let _ = tx.send(Event::Rejected(format!(
            "the prompt has {} tokens but the context holds {n_ctx}; shorten the conversation \
             (or restart the server with a larger -c, up to the model's {})",
            ids.len(),
            model.hparams.n_ctx_train
        )));
        return;
    }
    let room = n_ctx - ids.len();
    let max_new = job.max_tokens.unwrap_or(room).min(room);
    let _ = tx.send(Event::Started {
        prompt_tokens: ids.len(),
    });
    let mut text = String::new();
    if let Some(p) = prefix {
        text.push_str(&p);
        let _ = tx.send(Event::Piece(p));
    }
    let mut dec = tok.stream_decoder();
    let mut sampler = Sampler::new(job.sampler);
    let mut stopped_by_text = false;
    let t0 = Instant::now();
    let result = generate(session, &ids, max_new, &mut sampler, &stops, |id| {
        let piece = dec.push(id);
        if !piece.is_empty() {
            text.push_str(&piece);
            if let Some(at) = first_stop(&text, &job.stops) {
                text.truncate(at);
                stopped_by_text = true;
                return false;
            }
            if tx.send(Event::Piece(piece)).is_err() {
                return false;
            }
        }
        !tx.is_closed() && !INTERRUPTED.load(Ordering::Relaxed)
    });
    match result {
        Ok(g) => {
            if !stopped_by_text {
                text.push_str(&dec.finish());
                if let Some(at) = first_stop(&text, &job.stops) {
                    text.truncate(at);
                    stopped_by_text = true;
                }
            }
            let finish = match g.stop {
                StopReason::Length if !stopped_by_text => Finish::Length,
                _ => Finish::Stop,
            };
            eprintln!(
                "request: {} prompt tokens ({} from cache), {} generated in {:.2} s{}",
                g.stats.prompt_tokens,
                g.stats.prompt_tokens - g.stats.prompt_evaluated,
                g.stats.generated_tokens,
                t0.elapsed().as_secs_f64(),
                if g.stop == StopReason::Cancelled && !stopped_by_text {
                    " (cancelled)"
                } else {
                    ""
                }
            );
            let _ = tx.send(Event::Done {
                text,
                completion_tokens: g.ids.len(),
                finish,
            });
        }
        Err(e) => {
            session.reset();
            let _ = tx.send(Event::Failed(e.to_string()));
        }
    }
}

/// Byte offset of the earliest stop sequence in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// How much of `text` can be shown: up to the first stop sequence, and short of any tail that
/// could be the start of one.
fn safe_len(text: &str, stops: &[String]) -> usize {
    let mut end = text.len();
    for s in stops.iter().filter(|s| !s.is_empty()) {
        if let Some(i) = text.find(s.as_str()) {
            end = end.min(i);
            continue;
        }
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                end = end.min(text.len() - k);
                break;
            }
        }
    }
    end
}

// ---------------------------------------------------------------- replies

/// The final content and tool calls of a chat reply: text segments (and calls that do not
/// parse, as their text) joined by newlines; parsed calls become `tool_calls`.
fn final_reply(text: &str, tools: bool, format: ChatFormat) -> (String, Vec<ToolCall>) {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    let segments = match format {
        ChatFormat::Glm4 => parse_reply_glm4(text, tools),
        _ => parse_reply(text, tools),
    };
    for seg in segments {
        match seg {
            Segment::Text(c) => parts.push(c),
            Segment::ToolCall(c) => calls.push(c),
            Segment::Code { content, .. } => parts.push(content.trim().to_string()),
            Segment::Other {
                metadata,
                content,
                error,
            } => {
                if let Some(e) = error {
                    eprintln!("warning: reply with metadata {metadata:?} returned as text: {e}");
                }
                parts.push(content.trim().to_string())
            }
        }
    }
    parts.retain(|p| !p.is_empty());
    (parts.join("\n"), calls)
}

/// The part of a growing reply that is certain to be the start of `final_reply`'s content:
/// text segments so far, up to the first segment that may be a tool call, without a tail that
/// may become a stop sequence or trailing whitespace.
fn stable_content(text: &str, tools: bool, stops: &[String]) -> String {
    let mut t = &text[..safe_len(text, stops)];
    // A tail that may still become `<|assistant|>` (the model can write it as plain text too).
    const SEP: &str = "<|assistant|>";
    if let Some(k) = (1..SEP.len()).rev().find(|&k| t.ends_with(&SEP[..k])) {
        t = &t[..t.len() - k];
    }
    let segments: Vec<&str> = t.split("<|assistant|>").collect();
    let mut parts: Vec<&str> = Vec::new();
    for (k, part) in segments.iter().enumerate() {
        let last = k + 1 == segments.len();
        if part.trim().is_empty() {
            continue;
        }
        let Some((meta, content)) = part.split_once('\n') else {
            if last {
                break; // the metadata line is not complete yet
            }
            parts.push(part.trim());
            continue;
        };
        let meta = meta.trim();
        if !meta.is_empty() && tools && meta != glm_runtime::agent::INTERPRETER {
            break; // a tool call: held back until the end
        }
        parts.push(content.trim());
    }
    parts.retain(|p| !p.is_empty());
    parts.join("\n")
}

/// OpenAI's `tool_calls` array.
fn tool_calls_json(calls: &[ToolCall], streaming: bool) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({
                    "id": format!("call_{}", random_hex(12)),
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": serde_json::to_string(&c.arguments).unwrap_or_default(),
                    }
                });
                if streaming {
                    v["index"] = json!(i);
                }
                v
            })
            .collect(),
    )
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap_or('0'))
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- HTTP

struct AppState {
    /// The model's prompt format: how OpenAI messages map and replies parse.
    format: ChatFormat,
    jobs: Mutex<Option<std_mpsc::Sender<Job>>>,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    model: String,
    n_ctx: usize,
    api_key: Option<String>,
    defaults: SamplerOptions,
    fixed_seed: Option<u64>,
}

type Shared = Arc<AppState>;

/// An OpenAI-style error response.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.0 {
            StatusCode::UNAUTHORIZED => "authentication_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let mut r = (
            self.0,
            Json(json!({"error": {"message": self.1, "type": kind, "param": null, "code": null}})),
        )
            .into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub fn run(a: Args) -> Result<()> {
    let mut defaults = a.sampling.options()?;
    let fixed_seed = a.sampling.seed;
    let (jobs_tx, jobs_rx) = std_mpsc::channel::<Job>();
    let queued = Arc::new(AtomicUsize::new(0));
    let (info, worker) = spawn_worker(a.model.clone(), jobs_rx, queued.clone())?;
    defaults.seed = 0;
    let state = Arc::new(AppState {
        jobs: Mutex::new(Some(jobs_tx)),
        queued,
        max_queue: a.max_queue,
        model: a.alias.clone().unwrap_or(info.name),
        n_ctx: info.n_ctx,
        format: info.format,
        api_key: a.api_key.clone(),
        defaults,
        fixed_seed,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(serve(a, state.clone()));
    // Let the worker finish its current job and stop.
    state.jobs.lock().map(|mut j| j.take()).ok();
    drop(rt);
    let _ = worker.join();
    served
}

async fn serve(a: Args, state: Shared) -> Result<()> {
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    let app = Router::new()
        .route("/health", get(health))
        .merge(api)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(a.max_body))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
        .await
        .with_context(|| format!("binding {}:{}", a.host, a.port))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "glmtool serve: model {:?}, context {}, one worker (requests queue)",
        state.model, state.n_ctx
    );
    eprintln!("listening on http://{addr}");
    eprintln!(
        "limits: {} waiting requests, {} connections, {} s to send headers",
        a.max_queue, a.max_connections, a.header_timeout
    );
    accept_loop(
        listener,
        app,
        a.max_connections.max(1),
        Duration::from_secs(a.header_timeout.max(1)),
    )
    .await;
    eprintln!("shutting down");
    Ok(())
}

/// Serves connections until Ctrl-C: at most `max_connections` at once (further clients wait in
/// the kernel's backlog until one closes), each with `header_timeout` to send a request's
/// headers — also when idle between keep-alive requests — before it is closed. (axum::serve
/// has neither: a client that never finished its headers held a connection forever.)
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    max_connections: usize,
    header_timeout: Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let shutdown = async {
        while !INTERRUPTED.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = &mut shutdown => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await; // e.g. out of file descriptors
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
}

async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let want = format!("Bearer {key}");
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Length-independent comparison of the bytes.
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want.as_bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0;
        if !same {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (send Authorization: Bearer KEY)".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(s): State<Shared>) -> Json<Value> {
    // "queued": requests waiting for the model (not counting the one it is serving).
    Json(json!({"status": "ok", "model": s.model, "queued": s.queued.load(Ordering::SeqCst)}))
}

async fn models(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": s.model, "object": "model", "created": now(), "owned_by": "glmtool", "context_length": s.n_ctx}
    ]}))
}

/// The body's bytes, or the reason there are none (too large, ...).
fn body_bytes(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(status, "request body too large".into())
        } else {
            ApiError(status, r.body_text())
        }
    })
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        bad(e.0)
    }
}

/// Parameters shared by both completion endpoints, with the server's defaults filled in.
struct Params {
    stream: bool,
    include_usage: bool,
    max_tokens: Option<usize>,
    sampler: SamplerOptions,
    stops: Vec<String>,
}

fn params(s: &AppState, p: glm_openai::Params) -> Params {
    let mut sampler = s.defaults.clone();
    if let Some(t) = p.temperature {
        sampler.temperature = t;
    }
    if let Some(t) = p.top_p {
        sampler.top_p = t;
    }
    sampler.seed = p
        .seed
        .unwrap_or_else(|| s.fixed_seed.unwrap_or_else(rand::random));
    Params {
        stream: p.stream,
        include_usage: p.include_usage,
        max_tokens: p.max_tokens,
        sampler,
        stops: p.stops,
    }
}

/// Whether one more request may wait for the model: 503 (with Retry-After) when `queued`
/// requests already wait and `max` is reached.
fn queue_room(queued: usize, max: usize) -> Result<(), ApiError> {
    if queued >= max {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server is busy: {queued} requests are waiting (--max-queue {max}); retry later"),
        ));
    }
    Ok(())
}

/// Queues a job; returns its event channel after the worker accepted it (prompt tokenized
/// and within the context), or the error response.
async fn submit(
    s: &AppState,
    prompt: Prompt,
    p: &Params,
) -> Result<(usize, mpsc::UnboundedReceiver<Event>), ApiError> {
    queue_room(s.queued.load(Ordering::SeqCst), s.max_queue)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt,
        max_tokens: p.max_tokens,
        sampler: p.sampler.clone(),
        stops: p.stops.clone(),
        tx,
    };
    s.queued.fetch_add(1, Ordering::SeqCst);
    let sent = s
        .jobs
        .lock()
        .ok()
        .and_then(|j| j.as_ref().map(|j| j.send(job).is_ok()))
        .unwrap_or(false);
    if !sent {
        s.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }
    match rx.recv().await {
        Some(Event::Started { prompt_tokens }) => Ok((prompt_tokens, rx)),
        Some(Event::Rejected(m)) => Err(bad(m)),
        Some(Event::Failed(m)) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)),
        _ => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        )),
    }
}

/// Waits for the end of a job.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<(String, usize, Finish), ApiError> {
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Done {
                text,
                completion_tokens,
                finish,
            } => return Ok((text, completion_tokens, finish)),
            Event::Failed(m) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)),
            _ => {}
        }
    }
    Err(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the generation was stopped".into(),
    ))
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

async fn chat_completions(
    State(s): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let ChatRequest {
        params: p,
        messages,
        tools,
        prefix,
    } = ChatRequest::parse_as(&body_bytes(body)?, s.format)?;
    let format = s.format;
    if format == ChatFormat::Completion {
        return Err(bad(
            "this is a base or code model without a chat format: use /v1/completions",
        ));
    }
    if tools && !matches!(format, ChatFormat::Chatglm3 | ChatFormat::Glm4) {
        return Err(bad(format!(
            "tools: the model's prompt format ({}) has no tool protocol",
            format.as_str()
        )));
    }
    let p = params(&s, p);
    let (prompt_tokens, mut rx) = submit(&s, Prompt::Chat { messages, prefix }, &p).await?;
    let id = format!("chatcmpl-{}", random_hex(24));
    let created = now();
    if !p.stream {
        let (text, completion, finish) = collect(&mut rx).await?;
        let (content, calls) = final_reply(&text, tools, format);
        let mut message = json!({"role": "assistant", "content": content});
        let mut reason = finish_name(finish);
        if !calls.is_empty() {
            message["tool_calls"] = tool_calls_json(&calls, false);
            if content.is_empty() {
                message["content"] = Value::Null;
            }
            reason = "tool_calls";
        }
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": s.model,
            "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": null}],
            "usage": usage(prompt_tokens, completion),
        }))
        .into_response());
    }
    let chunk = {
        let id = id.clone();
        let model = s.model.clone();
        move |delta: Value, finish: Option<&str>| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
            })
            .to_string()
        }
    };
    let mut out = VecDeque::new();
    out.push_back(chunk(json!({"role": "assistant", "content": ""}), None));
    let state = StreamState {
        rx,
        out,
        text: String::new(),
        sent: String::new(),
        done: false,
    };
    let model = s.model.clone();
    let (stops, include_usage) = (p.stops.clone(), p.include_usage);
    Ok(sse_stream(state, move |st, event| match event {
        Event::Piece(piece) => {
            st.text.push_str(&piece);
            let stable = stable_content(&st.text, tools, &stops);
            if let Some(delta) = stable.strip_prefix(st.sent.as_str()) {
                if !delta.is_empty() {
                    st.out.push_back(chunk(json!({"content": delta}), None));
                    st.sent = stable.clone();
                }
            }
        }
        Event::Done {
            text,
            completion_tokens,
            finish,
        } => {
            let (content, calls) = final_reply(&text, tools, format);
            if let Some(delta) = content.strip_prefix(st.sent.as_str()) {
                if !delta.is_empty() {
                    st.out.push_back(chunk(json!({"content": delta}), None));
                }
            }
            let reason = if calls.is_empty() {
                finish_name(finish)
            } else {
                st.out.push_back(chunk(
                    json!({"tool_calls": tool_calls_json(&calls, true)}),
                    None,
                ));
                "tool_calls"
            };
            st.out.push_back(chunk(json!({}), Some(reason)));
            if include_usage {
                st.out.push_back(
                    json!({
                        "id": id, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [],
                        "usage": usage(prompt_tokens, completion_tokens),
                    })
                    .to_string(),
                );
            }
            st.out.push_back("[DONE]".into());
            st.done = true;
        }
        _ => {}
    }))
}

struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    out: VecDeque<String>,
    text: String,
    sent: String,
    done: bool,
}

impl StreamState {
    /// Ends the stream with an error event (generation failed after the headers were sent).
    fn fail(&mut self, message: &str) {
        self.out
            .push_back(json!({"error": {"message": message, "type": "server_error"}}).to_string());
        self.out.push_back("[DONE]".into());
        self.done = true;
    }
}

/// An SSE response: sends the lines `on_event` queues for each generation event, until it (or
/// a failure) marks the stream done or the generation ends. `on_event` sees every event but
/// `Failed`, which ends the stream with an error event.
fn sse_stream(
    state: StreamState,
    on_event: impl FnMut(&mut StreamState, Event) + Send + 'static,
) -> Response {
    let stream =
        futures_util::stream::unfold((state, on_event), |(mut st, mut on_event)| async move {
            loop {
                if let Some(line) = st.out.pop_front() {
                    let event = SseEvent::default().data(line);
                    return Some((Ok::<_, std::convert::Infallible>(event), (st, on_event)));
                }
                if st.done {
                    return None;
                }
                match st.rx.recv().await {
                    Some(Event::Failed(m)) => st.fail(&m),
                    Some(event) => on_event(&mut st, event),
                    None => return None,
                }
            }
        });
    Sse::new(stream).into_response()
}

async fn completions(
    State(s): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let CompletionRequest { params: p, prompt } = CompletionRequest::parse(&body_bytes(body)?)?;
    let p = params(&s, p);
    let (prompt_tokens, mut rx) = submit(&s, Prompt::Raw(prompt), &p).await?;
    let id = format!("cmpl-{}", random_hex(24));
    let created = now();
    if !p.stream {
        let (text, completion, finish) = collect(&mut rx).await?;
        return Ok(Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": s.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_name(finish), "logprobs": null}],
            "usage": usage(prompt_tokens, completion),
        }))
        .into_response());
    }
    let model = s.model.clone();
    let stops = p.stops.clone();
    let include_usage = p.include_usage;
    let state = StreamState {
        rx,
        out: VecDeque::new(),
        text: String::new(),
        sent: String::new(),
        done: false,
    };
    let chunk = move |text: &str, finish: Option<&str>| {
        json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
        })
    };
    Ok(sse_stream(state, move |st, event| match event {
        Event::Piece(piece) => {
            st.text.push_str(&piece);
            let end = safe_len(&st.text, &stops);
            if end > st.sent.len() {
                let delta = &st.text[st.sent.len()..end];
                st.out.push_back(chunk(delta, None).to_string());
                st.sent = st.text[..end].to_string();
            }
        }
        Event::Done {
            text,
            completion_tokens,
            finish,
        } => {
            let delta = text.strip_prefix(st.sent.as_str()).unwrap_or("");
            let mut last = chunk(delta, Some(finish_name(finish)));
            if include_usage {
                last["usage"] = usage(prompt_tokens, completion_tokens);
            }
            st.out.push_back(last.to_string());
            st.out.push_back("[DONE]".into());
            st.done = true;
        }
        _ => {}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_answers_503_with_retry_after() {
        assert!(queue_room(0, 16).is_ok() && queue_room(15, 16).is_ok());
        let e = queue_room(16, 16).unwrap_err();
        assert_eq!(e.0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.1.contains("--max-queue 16"), "{}", e.1);
        let r = e.into_response();
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
        assert!(
            queue_room(0, 0).is_err(),
            "--max-queue 0: only the running request"
        );
    }

    #[test]
    fn stop_sequences_hold_back_their_prefixes() {
        let stops = vec!["END".to_string(), "。".to_string()];
        assert_eq!(safe_len("abc EN", &stops), 4);
        assert_eq!(safe_len("abc END more", &stops), 4);
        assert_eq!(safe_len("abc E", &stops), 4);
        assert_eq!(safe_len("abc", &stops), 3);
        assert_eq!(first_stop("好。END", &stops), Some(3));
        assert_eq!(first_stop("x", &[String::new()]), None);
    }

    #[test]
    fn glm4_tool_calls_are_json_arguments() {
        let (content, calls) = final_reply(
            "\nLet me check.<|assistant|>get_weather\n{\"city\": \"北京\"}",
            true,
            ChatFormat::Glm4,
        );
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments["city"], "北京");
        assert_eq!(calls[0].to_message().content, "{\"city\": \"北京\"}");
        // not JSON: returned as text
        let (content, calls) = final_reply("f\nnot json", true, ChatFormat::Glm4);
        assert!(calls.is_empty());
        assert_eq!(content, "not json");
    }

    #[test]
    fn streamed_content_is_a_prefix_of_the_final_reply() {
        let replies = [
            ("\n Hello world.  \n", false),
            (
                "\n 我来算。<|assistant|>interpreter\n```python\nprint(1)\n```",
                false,
            ),
            (
                "\nLet me check.<|assistant|>get_weather\n```python\ntool_call(city='x')\n```",
                true,
            ),
            ("get_weather\n```python\ntool_call(city=x)\n```", true),
            ("no newline at all", true),
        ];
        for (text, tools) in replies {
            let (content, _) = final_reply(text, tools, ChatFormat::Chatglm3);
            let mut sent = String::new();
            for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
                let stable = stable_content(&text[..end], tools, &[]);
                assert!(
                    stable.starts_with(&sent),
                    "{text:?}@{end}: {stable:?} after {sent:?}"
                );
                assert!(
                    content.starts_with(&stable),
                    "{text:?}@{end}: {stable:?} vs {content:?}"
                );
                sent = stable;
            }
        }
        let (content, calls) = final_reply(
            "\nLet me check.<|assistant|>get_weather\n```python\ntool_call(city='北京')\n```",
            true,
            ChatFormat::Chatglm3,
        );
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 1);
        let j = tool_calls_json(&calls, false);
        assert_eq!(j[0]["function"]["name"], "get_weather");
        assert_eq!(j[0]["function"]["arguments"], "{\"city\":\"北京\"}");
        assert!(j[0]["id"].as_str().unwrap().starts_with("call_"));
        // A malformed call comes back as text.
        let (content, calls) = final_reply(
            "get_weather\ntool_call(city=北京)",
            true,
            ChatFormat::Chatglm3,
        );
        assert_eq!((content.as_str(), calls.len()), ("tool_call(city=北京)", 0));
    }
}
