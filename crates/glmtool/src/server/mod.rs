//! `glmtool serve`: an OpenAI-compatible HTTP server (axum + tokio).
//!
//! One worker thread owns the model and its `Session` (so the KV-cache prefix is re-used across
//! requests); HTTP handlers turn requests into ChatGLM3 messages (`glm_runtime::agent`) and queue
//! jobs for it. Each job streams events back on its own channel; a handler that goes away (a
//! client that disconnects) closes that channel, which stops the generation at the next token.

mod chat;
mod completions;
mod metrics;
mod stream;
mod web;
mod worker;

use chat::*;
use completions::*;
use metrics::*;
use stream::*;
use worker::*;

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
use glm_openai::{wire, BadRequest, ChatRequest, CompletionRequest};
use glm_runtime::agent::{parse_reply_as, split_segment, Segment, ToolCall};
use glm_runtime::chat::{build_chat_ids, completion_ids, stop_ids, Message};
use glm_runtime::constraint::{ConstraintError, OutputSpec, Shape};
use glm_runtime::generate::{GenerateStats, Generated, StopReason, TokenLogprob};
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
    /// When a chat does not fit the context (with room for max_tokens, default a quarter of it),
    /// drop its oldest turns as `run` does, and say so in the response (`"truncated": true`,
    /// header x-context-dropped-messages); without it such requests get 400 (llama-server's
    /// --context-shift)
    #[arg(long = "context-shift")]
    pub context_shift: bool,
    /// Let web pages from ORIGIN (e.g. http://localhost:3000, or * for any) call the API from
    /// a browser: CORS headers and answers to OPTIONS preflights. Off by default
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origin: Option<String>,
    /// Slots: requests served at once, each with its own KV cache of -c tokens, batched into
    /// one pass over the weights per step (default 4 where glmtool's flash attention runs,
    /// fewer if their caches do not fit in memory; 1 with GPU layers)
    #[arg(long = "parallel", value_name = "N")]
    pub parallel: Option<usize>,
    /// Serve Prometheus metrics at /metrics (llama-server's llamacpp:* names)
    #[arg(long)]
    pub metrics: bool,
}

// ---------------------------------------------------------------- HTTP

pub(crate) struct AppState {
    /// The model's prompt format: how OpenAI messages map and replies parse.
    pub(crate) format: ChatFormat,
    pub(crate) jobs: Mutex<Option<std_mpsc::Sender<Job>>>,
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) max_queue: usize,
    pub(crate) model: String,
    pub(crate) n_ctx: usize,
    pub(crate) api_key: Option<String>,
    pub(crate) defaults: SamplerOptions,
    pub(crate) fixed_seed: Option<u64>,
    pub(crate) metrics: Arc<Metrics>,
    /// `--parallel`: the most choices (`n`) a request may ask for.
    pub(crate) n_slots: usize,
}

pub(crate) type Shared = Arc<AppState>;

/// An OpenAI-style error response.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.0 {
            StatusCode::UNAUTHORIZED => "authentication_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let mut r = (
            self.0,
            Json(wire::ErrorResponse {
                error: wire::ErrorBody {
                    message: self.1,
                    kind,
                    param: None,
                    code: None,
                },
            }),
        )
            .into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub fn run(a: Args) -> Result<()> {
    let mut defaults = a.sampling.options()?;
    let fixed_seed = a.sampling.seed;
    let (jobs_tx, jobs_rx) = std_mpsc::channel::<Job>();
    let queued = Arc::new(AtomicUsize::new(0));
    if a.parallel == Some(0) {
        anyhow::bail!("-np 0: at least one slot");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Listen first: while the model loads, /health (and everything else) answers 503 "Loading
    // model", as llama-server does; the full router replaces that one when the model is ready.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((a.host.as_str(), a.port)))
        .with_context(|| format!("binding {}:{}", a.host, a.port))?;
    let addr = listener.local_addr()?;
    let app = Arc::new(std::sync::RwLock::new(loading_router()));
    eprintln!("listening on http://{addr}");
    let accept = rt.spawn(accept_loop(
        listener,
        app.clone(),
        a.max_connections.max(1),
        Duration::from_secs(a.header_timeout.max(1)),
    ));
    let metrics = Arc::new(Metrics::default());
    let wopts = WorkerOptions {
        context_shift: a.context_shift,
        parallel: a.parallel,
    };
    let (info, worker) = match spawn_worker(
        a.model.clone(),
        jobs_rx,
        queued.clone(),
        wopts,
        metrics.clone(),
    ) {
        Ok(x) => x,
        Err(e) => {
            accept.abort();
            drop(rt);
            return Err(e);
        }
    };
    eprintln!(
        "slots: {}{}, each with a context of {} tokens{}",
        info.n_slots,
        if a.parallel.is_none() {
            " (default; -np N to change)"
        } else {
            ""
        },
        info.n_ctx,
        if info.n_slots > 1 && !info.batching {
            " (without flash attention they take turns, one per step)"
        } else {
            ""
        }
    );
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
        metrics,
        n_slots: info.n_slots,
    });
    if let Ok(mut current) = app.write() {
        *current = router(&a, state.clone());
    }
    eprintln!(
        "glmtool serve: model {:?}, context {} per slot; ready",
        state.model, state.n_ctx
    );
    eprintln!(
        "limits: {} waiting requests, {} connections, {} s to send headers",
        a.max_queue, a.max_connections, a.header_timeout
    );
    let _ = rt.block_on(accept);
    eprintln!("shutting down");
    // Let the worker finish its current job and stop.
    state.jobs.lock().map(|mut j| j.take()).ok();
    drop(rt);
    let _ = worker.join();
    Ok(())
}

/// What answers while the model loads: 503 "Loading model" everywhere (llama-server's
/// `/health` reply), with Retry-After.
fn loading_router() -> Router {
    Router::new().fallback(|| async {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": 503, "message": "Loading model",
                                  "type": "unavailable_error"}})),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    })
}

/// The server's routes over `state`.
pub(crate) fn router(a: &Args, state: Shared) -> Router {
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/slots", get(slots));
    let api = if a.metrics {
        api.route("/metrics", get(metrics::metrics))
    } else {
        api
    };
    let api = api.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    let cors = Arc::new(a.cors_origin.clone());
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .merge(web::router())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(a.max_body))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| cors_layer(cors.clone(), req, next),
        ))
        .with_state(state)
}

/// `--cors-origin`: a preflight (OPTIONS with an Origin) from the allowed origin is answered
/// here, before authentication (browsers send no credentials in it); every response to that
/// origin carries `Access-Control-Allow-Origin`. Other origins get no CORS headers, so browsers
/// keep blocking them; without the flag nothing changes.
pub(crate) async fn cors_layer(allowed: Arc<Option<String>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let allow = match (allowed.as_deref(), origin) {
        (Some("*"), Some(_)) => Some("*".to_string()),
        (Some(a), Some(o)) if a.trim_end_matches('/') == o => Some(o),
        _ => None,
    };
    let Some(allow) = allow else {
        return next.run(req).await;
    };
    let allow =
        header::HeaderValue::from_str(&allow).unwrap_or(header::HeaderValue::from_static("null"));
    let mut resp = if req.method() == axum::http::Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        // whatever headers the page's client sends (OpenAI's SDKs add x-stainless-*)
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(header::HeaderValue::from_static(
                "Authorization, Content-Type",
            ));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            header::HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    resp.headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    resp.headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("Origin"));
    resp
}

/// Serves connections until Ctrl-C: at most `max_connections` at once (further clients wait in
/// the kernel's backlog until one closes), each with `header_timeout` to send a request's
/// headers — also when idle between keep-alive requests — before it is closed. (axum::serve
/// has neither: a client that never finished its headers held a connection forever.)
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Arc<std::sync::RwLock<Router>>,
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
        // each request goes to the router of the moment (the loading one, then the server's)
        let app = app.clone();
        let svc = hyper_util::service::TowerToHyperService::new(axum::routing::any(
            move |req: Request| {
                let current = app
                    .read()
                    .map(|r| r.clone())
                    .unwrap_or_else(|e| e.into_inner().clone());
                async move {
                    use tower::ServiceExt;
                    match current.oneshot(req).await {
                        Ok(r) => r,
                        Err(e) => match e {},
                    }
                }
            },
        ));
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

pub(crate) async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
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

/// `GET /health`: 200 `{"status": "ok", ...}`; with `?fail_on_no_slot=1`, 503 "no slot
/// available" while every slot is busy (llama-server's).
pub(crate) async fn health(
    State(s): State<Shared>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let (processing, deferred, n_slots) = s.metrics.load();
    let fail_on_no_slot = q
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "fail_on_no_slot=1" || kv == "fail_on_no_slot=true");
    if fail_on_no_slot && processing >= n_slots {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "no slot available".into())
            .into_response();
    }
    // "queued": requests waiting for a slot (not counting those being served).
    Json(json!({
        "status": "ok",
        "model": s.model,
        "queued": s.queued.load(Ordering::SeqCst),
        "slots_idle": n_slots - processing.min(n_slots),
        "slots_processing": processing,
        "requests_deferred": deferred,
    }))
    .into_response()
}

pub(crate) async fn models(State(s): State<Shared>) -> Json<Value> {
    let mut v = serde_json::to_value(wire::ModelList {
        object: "list",
        data: vec![wire::ModelCard {
            id: s.model.clone(),
            object: "model",
            created: now(),
            owned_by: "glmtool",
        }],
    })
    .unwrap_or_default();
    // llama-server's extra
    v["data"][0]["context_length"] = json!(s.n_ctx);
    Json(v)
}

/// The body's bytes, or the reason there are none (too large, ...).
pub(crate) fn body_bytes(
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
pub(crate) struct Params {
    pub(crate) logprobs: Option<usize>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) max_tokens: Option<usize>,
    pub(crate) sampler: SamplerOptions,
    pub(crate) stops: Vec<String>,
    /// The output's grammar and the field that gave it.
    pub(crate) structured: Option<glm_openai::Structured>,
    /// Choices (`n`).
    pub(crate) n: usize,
}

pub(crate) fn params(s: &AppState, p: glm_openai::Params) -> Params {
    let mut sampler = s.defaults.clone();
    if let Some(t) = p.temperature {
        sampler.temperature = t;
    }
    if let Some(t) = p.top_p {
        sampler.top_p = t;
    }
    if let Some(k) = p.top_k {
        sampler.top_k = k;
    }
    if let Some(m) = p.min_p {
        sampler.min_p = m;
    }
    if let Some(r) = p.repeat_penalty {
        sampler.repeat_penalty = r;
    }
    if let Some(n) = p.repeat_last_n {
        sampler.repeat_last_n = n;
    }
    if let Some(f) = p.frequency_penalty {
        sampler.frequency_penalty = f;
    }
    if let Some(f) = p.presence_penalty {
        sampler.presence_penalty = f;
    }
    sampler.logit_bias = p.logit_bias;
    sampler.seed = p
        .seed
        .unwrap_or_else(|| s.fixed_seed.unwrap_or_else(rand::random));
    Params {
        logprobs: p.logprobs,
        stream: p.stream,
        include_usage: p.include_usage,
        max_tokens: p.max_tokens,
        sampler,
        stops: p.stops,
        structured: p.structured,
        n: p.n,
    }
}

/// Whether one more request may wait for the model: 503 (with Retry-After) when `queued`
/// requests already wait and `max` is reached.
pub(crate) fn queue_room(queued: usize, max: usize) -> Result<(), ApiError> {
    if queued >= max {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server is busy: {queued} requests are waiting (--max-queue {max}); retry later"),
        ));
    }
    Ok(())
}

/// Queues the `n` choices of a request (`p.n`): one job each (the first to start reads the
/// prompt, the engine gives the others a copy of its cache), choice i sampled with seed + i. Returns the
/// prompt's tokens, the messages the context shift dropped, and the event channels in choice
/// order once the worker accepted the jobs (prompt tokenized and within the context), or the
/// error response.
pub(crate) async fn submit_choices(
    s: &AppState,
    prompt: Prompt,
    output: OutputSpec,
    p: &Params,
) -> Result<(usize, usize, Vec<mpsc::UnboundedReceiver<Event>>), ApiError> {
    if p.n > s.n_slots {
        return Err(bad(format!(
            "n: at most {} choices (the server's --parallel slots)",
            s.n_slots
        )));
    }
    let mut rxs = Vec::with_capacity(p.n);
    let mut head = (0, 0);
    for i in 0..p.n {
        let mut sampler = p.sampler.clone();
        sampler.seed = sampler.seed.wrapping_add(i as u64);
        let (prompt_tokens, dropped, rx) =
            submit_one(s, prompt.clone(), output.clone(), p, sampler).await?;
        if i == 0 {
            head = (prompt_tokens, dropped);
        }
        rxs.push(rx);
    }
    Ok((head.0, head.1, rxs))
}

async fn submit_one(
    s: &AppState,
    prompt: Prompt,
    output: OutputSpec,
    p: &Params,
    sampler: SamplerOptions,
) -> Result<(usize, usize, mpsc::UnboundedReceiver<Event>), ApiError> {
    queue_room(s.queued.load(Ordering::SeqCst), s.max_queue)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = Job {
        logprobs: p.logprobs,
        prompt,
        output,
        structured_field: p.structured.as_ref().map(|s| s.field),
        max_tokens: p.max_tokens,
        sampler,
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
        Some(Event::Started {
            prompt_tokens,
            dropped,
        }) => Ok((prompt_tokens, dropped, rx)),
        Some(Event::Rejected(m)) => Err(bad(m)),
        Some(Event::Failed(m)) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)),
        _ => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        )),
    }
}

/// Waits for the end of a job.
/// A finished reply: its text, counts and times, why it ended, and the tokens'
/// log-probabilities when asked for.
pub(crate) struct Collected {
    pub(crate) text: String,
    pub(crate) stats: GenerateStats,
    pub(crate) finish: Finish,
    pub(crate) logprobs: Vec<wire::TokenLogprob>,
}

/// A wire object as one line of JSON (an SSE `data:` payload).
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<Collected, ApiError> {
    let mut logprobs = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Logprob(v) => logprobs.push(v),
            Event::Done {
                text,
                stats,
                finish,
            } => {
                return Ok(Collected {
                    text,
                    stats,
                    finish,
                    logprobs,
                })
            }
            Event::Failed(m) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)),
            _ => {}
        }
    }
    Err(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the generation was stopped".into(),
    ))
}

/// Waits for the end of every choice of a request; returns them in order and the request's
/// counts: the prompt's (read once, by the first choice) and all choices' generated tokens and
/// time.
pub(crate) async fn collect_choices(
    rxs: &mut [mpsc::UnboundedReceiver<Event>],
) -> Result<(Vec<Collected>, GenerateStats), ApiError> {
    let mut out: Vec<Collected> = Vec::with_capacity(rxs.len());
    for rx in rxs.iter_mut() {
        out.push(collect(rx).await?);
    }
    let total = request_stats(out.iter().map(|c| &c.stats));
    Ok((out, total))
}

/// A request's counts from its choices' (in choice order): the prompt's, read once by the
/// first choice, and all choices' generated tokens and time.
pub(crate) fn request_stats<'a>(
    choices: impl IntoIterator<Item = &'a GenerateStats>,
) -> GenerateStats {
    let mut choices = choices.into_iter();
    let mut total = choices.next().cloned().unwrap_or_default();
    for s in choices {
        total.generated_tokens += s.generated_tokens;
        total.generate_seconds += s.generate_seconds;
    }
    total
}

/// The context shift's report on a response: a header with the number of messages dropped.
pub(crate) fn report_dropped(mut r: Response, dropped: usize) -> Response {
    if dropped > 0 {
        r.headers_mut()
            .insert("x-context-dropped-messages", dropped.into());
    }
    r
}

/// OpenAI's `usage`, with the prompt tokens that came from the KV cache of an earlier request
/// as `prompt_tokens_details.cached_tokens`.
pub(crate) fn usage(prompt: usize, s: &GenerateStats) -> wire::Usage {
    wire::Usage {
        prompt_tokens: prompt,
        completion_tokens: s.generated_tokens,
        total_tokens: prompt + s.generated_tokens,
        prompt_tokens_details: wire::PromptTokensDetails {
            cached_tokens: prompt.saturating_sub(s.prompt_evaluated),
        },
    }
}

/// llama-server's `timings`: what the prompt and the generation took.
pub(crate) fn timings(s: &GenerateStats) -> wire::Timings {
    wire::Timings {
        prompt_n: s.prompt_evaluated,
        prompt_ms: s.prompt_seconds * 1e3,
        prompt_per_second: s.prompt_tps(),
        predicted_n: s.generated_tokens,
        predicted_ms: s.generate_seconds * 1e3,
        predicted_per_second: s.generate_tps(),
    }
}

pub(crate) fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}
