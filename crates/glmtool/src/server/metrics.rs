//! What `serve` counts: llama-server's `llamacpp:` metrics in Prometheus' text format
//! (`/metrics`, behind `--metrics`), the slots as JSON (`/slots`), and the request ids of the
//! per-request log line. The model thread writes after each step and request; handlers read.

use super::*;
use glm_runtime::engine::{Engine, Phase, SlotState};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

#[derive(Default)]
pub(crate) struct Metrics {
    data: Mutex<Data>,
    next_id: AtomicU64,
}

#[derive(Default, Clone)]
struct Data {
    n_ctx: usize,
    requests_total: u64,
    prompt_tokens_total: u64,
    prompt_seconds_total: f64,
    tokens_predicted_total: u64,
    tokens_predicted_seconds_total: f64,
    n_decode_total: u64,
    busy_slots_total: u64,
    processing: usize,
    deferred: usize,
    slots: Vec<SlotState>,
}

impl Metrics {
    /// The engine's slots (of `n_ctx` tokens each) before the first request.
    pub(crate) fn init(&self, n_ctx: usize, engine: &Engine) {
        self.lock().n_ctx = n_ctx;
        self.observe(engine);
    }

    /// The slots' states and the requests in them, as the engine has them now.
    fn observe(&self, engine: &Engine) {
        let slots = engine.slot_states();
        let mut d = self.lock();
        d.processing = engine.n_active();
        d.slots = slots;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        // a panic elsewhere while holding it leaves plain counters: still readable
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn set_deferred(&self, n: usize) {
        self.lock().deferred = n;
    }

    /// After a step in which `busy` slots took part.
    pub(crate) fn stepped(&self, engine: &Engine, busy: usize) {
        {
            let mut d = self.lock();
            d.n_decode_total += 1;
            d.busy_slots_total += busy as u64;
        }
        self.observe(engine);
    }

    /// A request ended.
    pub(crate) fn request_done(&self, s: &GenerateStats) {
        let mut d = self.lock();
        d.requests_total += 1;
        d.prompt_tokens_total += s.prompt_evaluated as u64;
        d.prompt_seconds_total += s.prompt_seconds;
        d.tokens_predicted_total += s.generated_tokens as u64;
        d.tokens_predicted_seconds_total += s.generate_seconds;
    }

    /// Requests in a slot and waiting for one.
    pub(crate) fn load(&self) -> (usize, usize, usize) {
        let d = self.lock();
        (d.processing, d.deferred, d.slots.len())
    }

    /// Prometheus' text exposition format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let d = self.lock().clone();
        let kv_tokens: usize = d.slots.iter().map(|s| s.n_cached).sum();
        let kv_capacity = (d.n_ctx * d.slots.len()).max(1);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP llamacpp:{name} {help}");
            let _ = writeln!(out, "# TYPE llamacpp:{name} {kind}");
            let _ = writeln!(out, "llamacpp:{name} {v}");
        };
        put(
            "prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed.",
            d.prompt_tokens_total as f64,
        );
        put(
            "prompt_seconds_total",
            "counter",
            "Prompt process time.",
            d.prompt_seconds_total,
        );
        put(
            "tokens_predicted_total",
            "counter",
            "Number of generation tokens processed.",
            d.tokens_predicted_total as f64,
        );
        put(
            "tokens_predicted_seconds_total",
            "counter",
            "Predict process time.",
            d.tokens_predicted_seconds_total,
        );
        put(
            "n_decode_total",
            "counter",
            "Total number of model steps (one graph each).",
            d.n_decode_total as f64,
        );
        put(
            "n_busy_slots_per_decode",
            "counter",
            "Average number of busy slots per step.",
            ratio(d.busy_slots_total as f64, d.n_decode_total as f64),
        );
        put(
            "prompt_tokens_seconds",
            "gauge",
            "Average prompt throughput in tokens/s.",
            ratio(d.prompt_tokens_total as f64, d.prompt_seconds_total),
        );
        put(
            "predicted_tokens_seconds",
            "gauge",
            "Average generation throughput in tokens/s.",
            ratio(
                d.tokens_predicted_total as f64,
                d.tokens_predicted_seconds_total,
            ),
        );
        put(
            "kv_cache_usage_ratio",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            kv_tokens as f64 / kv_capacity as f64,
        );
        put(
            "kv_cache_tokens",
            "gauge",
            "KV-cache tokens.",
            kv_tokens as f64,
        );
        put(
            "requests_processing",
            "gauge",
            "Number of requests processing.",
            d.processing as f64,
        );
        put(
            "requests_deferred",
            "gauge",
            "Number of requests deferred.",
            d.deferred as f64,
        );
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP glmtool:{name} {help}");
            let _ = writeln!(out, "# TYPE glmtool:{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "glmtool:{name}{labels} {v}");
            }
        };
        let per_slot = |f: &dyn Fn(&SlotState) -> f64| {
            d.slots
                .iter()
                .map(|s| (format!("{{slot=\"{}\"}}", s.id), f(s)))
                .collect()
        };
        family(
            "requests_total",
            "counter",
            "Requests finished (any way).",
            vec![(String::new(), d.requests_total as f64)],
        );
        family(
            "slot_busy",
            "gauge",
            "Whether the slot holds a request.",
            per_slot(&|s| s.phase.is_some() as u8 as f64),
        );
        family(
            "slot_cached_tokens",
            "gauge",
            "Tokens in the slot's KV cache.",
            per_slot(&|s| s.n_cached as f64),
        );
        out
    }

    /// `/slots`: each slot's state, as llama-server's (the fields glmtool has).
    pub(crate) fn slots_json(&self) -> Value {
        let d = self.lock();
        Value::Array(
            d.slots
                .iter()
                .map(|s| {
                    let state = match s.phase {
                        None => "idle",
                        Some(Phase::Shared { .. } | Phase::Prompt { .. }) => "processing_prompt",
                        Some(Phase::Decode { .. }) => "generating",
                    };
                    json!({
                        "id": s.id,
                        "n_ctx": d.n_ctx,
                        "is_processing": s.phase.is_some(),
                        "state": state,
                        "n_cached": s.n_cached,
                        "n_prompt_tokens": s.prompt_tokens,
                        "n_decoded": s.generated,
                    })
                })
                .collect(),
        )
    }
}

/// `GET /metrics` (with `--metrics`).
pub(crate) async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// `GET /slots`.
pub(crate) async fn slots(State(s): State<Shared>) -> Json<Value> {
    Json(s.metrics.slots_json())
}
