//! The model thread: loads the model, takes jobs in order, streams events back; requests the
//! model cannot serve are rejected as `Event::Rejected`.

use super::*;
use glm_runtime::engine::{Client, Engine, Request};

// ---------------------------------------------------------------- the model worker

#[derive(Clone)]
pub(crate) enum Prompt {
    /// A chat.
    Chat(Vec<Message>),
    /// Plain text to continue.
    Raw(String),
}

pub(crate) struct Job {
    pub(crate) prompt: Prompt,
    /// What the reply may be (a grammar for the content, tool calls to force): compiled here
    /// into a constraint for this job's sampler.
    pub(crate) output: OutputSpec,
    /// The request field that gave the content's grammar (named in errors).
    pub(crate) structured_field: Option<&'static str>,
    pub(crate) max_tokens: Option<usize>,
    pub(crate) sampler: SamplerOptions,
    pub(crate) stops: Vec<String>,
    /// Log-probabilities asked for, with this many alternatives per token.
    pub(crate) logprobs: Option<usize>,
    pub(crate) tx: mpsc::UnboundedSender<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
}

pub(crate) enum Event {
    /// The prompt fits (after `dropped` messages of the oldest turns, with --context-shift);
    /// generation starts.
    Started {
        prompt_tokens: usize,
        dropped: usize,
    },
    /// The request cannot be served (400).
    Rejected(String),
    /// Decoded text of the next token(s).
    Piece(String),
    /// The next token's log-probability (OpenAI's chat `logprobs.content[i]` object), sent
    /// before its `Piece`.
    Logprob(wire::TokenLogprob),
    Done {
        text: String,
        /// Token counts and times (completion tokens = `generated_tokens`).
        stats: GenerateStats,
        finish: Finish,
    },
    /// The model failed (500).
    Failed(String),
}

pub(crate) struct ModelInfo {
    pub(crate) name: String,
    pub(crate) n_ctx: usize,
    pub(crate) format: ChatFormat,
    /// Slots (`-np`).
    pub(crate) n_slots: usize,
    /// Whether a step batches several slots (flash attention on the CPU).
    pub(crate) batching: bool,
}

/// How the worker serves: `context_shift` (chats that do not fit lose their oldest turns,
/// `run`'s policy) and `parallel` (`-np`: None = 4 where steps batch, else 1, fewer where
/// the caches would not fit in memory).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkerOptions {
    pub(crate) context_shift: bool,
    pub(crate) parallel: Option<usize>,
}

/// Slots when `-np` is not given.
const DEFAULT_SLOTS: usize = 4;

/// Loads the model on its own thread and serves jobs until the job channel closes: prepared
/// jobs wait (in order) for a free slot, and the engine steps every busy slot together.
pub(crate) fn spawn_worker(
    margs: ModelArgs,
    jobs: std_mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    wopts: WorkerOptions,
    metrics: Arc<Metrics>,
) -> Result<(ModelInfo, std::thread::JoinHandle<()>)> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<ModelInfo, String>>();
    let handle = std::thread::Builder::new()
        .name("model".into())
        .spawn(move || {
            // an explicit -np: the plan counts every slot's cache (and logits row), so that
            // the GPU's layers leave room for them
            let slots = wopts.parallel.unwrap_or(1);
            let shape = glm_runtime::PlanShape {
                n_seq: slots,
                ..margs.shape.plan_shape(slots)
            };
            let loaded = margs.load_shaped(shape, false).and_then(|model| {
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
            let mut session = match open_session(&model, opts, wopts.parallel) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let info = ModelInfo {
                name: model.name.clone(),
                n_ctx: session.n_ctx(),
                format: model.tokenizer.chat_format(),
                n_slots: session.n_seq(),
                batching: session.batches_sequences(),
            };
            let n_batch = session.n_batch();
            let mut engine = Engine::new(&mut session, n_batch);
            metrics.init(info.n_ctx, &engine);
            let _ = ready_tx.send(Ok(info));
            serve_jobs(&model, &mut engine, &jobs, &queued, wopts, &metrics);
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

/// The session of `-np` slots (by default 4 where steps batch, halved until the caches fit).
fn open_session<'m>(
    model: &'m glm_runtime::Model,
    mut opts: glm_runtime::SessionOptions,
    parallel: Option<usize>,
) -> Result<Session<'m>, String> {
    let batching = glm_runtime::session::choose_attention(model, opts.flash_attn, opts.cache_type)
        .is_ok_and(|a| matches!(a, glm_runtime::chatglm::Attention::Flash(_)));
    let mut n = parallel.unwrap_or(if batching { DEFAULT_SLOTS } else { 1 });
    loop {
        opts.n_seq = n;
        match Session::new(model, &opts) {
            Ok(s) => return Ok(s),
            // the default shrinks to what fits; an explicit -np is the user's to change
            Err(glm_runtime::RuntimeError::CacheTooBig(_)) if parallel.is_none() && n > 1 => n /= 2,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A job ready for a slot.
struct Prepared<'t> {
    request: Request,
    client: JobClient<'t>,
}

/// The step loop: takes jobs as they come (blocking only when nothing runs), starts waiting
/// jobs in the free slot that shares the longest prefix with them, steps the engine.
fn serve_jobs<'t>(
    model: &'t glm_runtime::Model,
    engine: &mut Engine<'_, '_, 't>,
    jobs: &std_mpsc::Receiver<Job>,
    queued: &AtomicUsize,
    wopts: WorkerOptions,
    metrics: &Arc<Metrics>,
) {
    let mut waiting: VecDeque<Prepared<'t>> = VecDeque::new();
    let mut open = true;
    let n_ctx = engine.session().n_ctx();
    loop {
        // new jobs: wait for one when there is nothing else to do
        if open && engine.is_idle() && waiting.is_empty() {
            match jobs.recv() {
                Ok(job) => waiting.extend(prepare(model, n_ctx, job, wopts.context_shift, metrics)),
                Err(_) => open = false,
            }
        }
        while open {
            match jobs.try_recv() {
                Ok(job) => waiting.extend(prepare(model, n_ctx, job, wopts.context_shift, metrics)),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        // clients that left while waiting: their line says so (nothing read, nothing generated)
        waiting.retain(|p| {
            let gone = p.client.tx.is_closed();
            if gone {
                queued.fetch_sub(1, Ordering::SeqCst);
                let stats = GenerateStats {
                    prompt_tokens: p.request.prompt.len(),
                    ..Default::default()
                };
                p.client.log_end(&stats, false, "cancelled");
            }
            !gone
        });
        while let Some(p) = waiting.front() {
            let Some(slot) = engine.pick_slot(&p.request.prompt) else {
                break;
            };
            let p = waiting.pop_front().expect("front");
            queued.fetch_sub(1, Ordering::SeqCst);
            // (choices of one request share its prompt's cache: `start` sees to it)
            if let Err(e) = engine.start(slot, p.request, Box::new(p.client)) {
                eprintln!("warning: a request could not start: {e}");
            }
        }
        metrics.set_deferred(waiting.len());
        if engine.is_idle() {
            if !open && waiting.is_empty() {
                return;
            }
            continue;
        }
        let busy = engine.n_active();
        engine.step();
        metrics.stepped(engine, busy);
    }
}

/// Tokenizes and checks a job; what cannot run is answered here (`Rejected`), what can gets
/// `Started` and waits for a slot.
fn prepare<'t>(
    model: &'t glm_runtime::Model,
    n_ctx: usize,
    job: Job,
    context_shift: bool,
    metrics: &Arc<Metrics>,
) -> Option<Prepared<'t>> {
    let tx = job.tx;
    let reject = |tx: &mpsc::UnboundedSender<Event>, e: Event| {
        let _ = tx.send(e);
        None
    };
    if tx.is_closed() {
        return None; // the client left while queued
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        return reject(&tx, Event::Failed("the server is shutting down".into()));
    }
    let tok = &model.tokenizer;
    let mut dropped = 0;
    let (ids, stops, shape) = match &job.prompt {
        Prompt::Chat(messages) => {
            // With --context-shift, the oldest whole turns go (never the system messages or
            // the last turn) until a reply of max_tokens (default: a quarter of the context)
            // fits, as `run` does.
            let reserve = job.max_tokens.unwrap_or(n_ctx / 4);
            let (base, mut turns) = crate::cmd::run::repl::split_conversation(messages.clone());
            let ids = loop {
                let kept: Vec<Message> =
                    base.iter().chain(turns.iter().flatten()).cloned().collect();
                let ids = match build_chat_ids(tok, &kept) {
                    Ok(ids) => ids,
                    Err(e) => {
                        return reject(
                            &tx,
                            Event::Rejected(format!("cannot tokenize the messages: {e}")),
                        )
                    }
                };
                if !context_shift || ids.len() + reserve <= n_ctx || turns.len() <= 1 {
                    break ids;
                }
                dropped += turns.remove(0).len();
            };
            (ids, stop_ids(tok), Shape::Reply(tok.chat_format()))
        }
        // a base or code model gets THUDM's `[gMASK] sop` prefix, as `run` gives it; a chat
        // model's raw completion is the text alone (as `run --raw`)
        Prompt::Raw(text) => match if tok.chat_format() == ChatFormat::Completion {
            completion_ids(tok, text)
        } else {
            tok.encode(text)
        } {
            Ok(ids) if !ids.is_empty() => (ids, vec![tok.special().eos], Shape::Text),
            Ok(_) => return reject(&tx, Event::Rejected("prompt: the prompt is empty".into())),
            Err(e) => {
                return reject(
                    &tx,
                    Event::Rejected(format!("cannot tokenize the prompt: {e}")),
                )
            }
        },
    };
    if ids.len() >= n_ctx {
        return reject(
            &tx,
            Event::Rejected(format!(
                "the prompt has {} tokens but the context holds {n_ctx}; shorten the \
                 conversation (or restart the server with a larger -c, up to the model's {})",
                ids.len(),
                model.hparams.n_ctx_train
            )),
        );
    }
    if let Some(&(id, _)) = job
        .sampler
        .logit_bias
        .iter()
        .find(|(id, _)| *id as usize >= tok.vocab_size())
    {
        return reject(
            &tx,
            Event::Rejected(format!(
                "logit_bias: token id {id} is outside the vocabulary of {}",
                tok.vocab_size()
            )),
        );
    }
    let constraint = match constraint_for(tok, &job.output, shape, &stops) {
        Ok(c) => c,
        Err(ConstraintError::Unsupported(e)) => {
            return reject(
                &tx,
                Event::Rejected(match job.structured_field {
                    Some(field) if !e.starts_with("tools") => format!("{field}: {e}"),
                    _ => e,
                }),
            );
        }
        Err(e) => return reject(&tx, Event::Failed(e.to_string())),
    };
    let room = n_ctx - ids.len();
    let max_new = job.max_tokens.unwrap_or(room).min(room);
    let _ = tx.send(Event::Started {
        prompt_tokens: ids.len(),
        dropped,
    });
    let mut sampler = Sampler::new(job.sampler);
    sampler.set_constraint(constraint);
    Some(Prepared {
        request: Request {
            prompt: ids,
            max_new,
            stop_ids: stops,
            top_logprobs: job.logprobs,
        },
        client: JobClient {
            id: metrics.next_request_id(),
            tok,
            tx,
            sampler,
            dec: Some(tok.stream_decoder()),
            text: String::new(),
            stops: job.stops,
            stopped_by_text: false,
            dropped,
            t0: Instant::now(),
            metrics: metrics.clone(),
        },
    })
}

/// One job as the engine's client: streams its pieces (and log-probabilities) to the HTTP
/// handler, stops at stop strings, and reports the end.
struct JobClient<'t> {
    id: u64,
    tok: &'t glm_runtime::Tokenizer,
    tx: mpsc::UnboundedSender<Event>,
    sampler: Sampler,
    /// Taken at the end (its last bytes).
    dec: Option<glm_runtime::tokenizer::StreamDecoder<'t>>,
    text: String,
    stops: Vec<String>,
    stopped_by_text: bool,
    dropped: usize,
    t0: Instant,
    metrics: Arc<Metrics>,
}

impl JobClient<'_> {
    /// The request's one line on the log, in a stable `key=value` format, and its counts in the
    /// metrics. `stats.prompt_evaluated` of the prompt's tokens were read, the rest came from a
    /// cache — unless the request never started (`started` false: nothing came from anywhere).
    fn log_end(&self, stats: &GenerateStats, started: bool, end: &str) {
        let cached = if started {
            stats.prompt_tokens - stats.prompt_evaluated
        } else {
            0
        };
        let total = self.t0.elapsed().as_secs_f64();
        eprintln!(
            "request id={} prompt_tokens={} cached_tokens={} generated_tokens={} \
             queue_s={:.3} prompt_s={:.3} generate_s={:.3} total_s={:.3} \
             dropped_messages={} end={end}",
            self.id,
            stats.prompt_tokens,
            cached,
            stats.generated_tokens,
            (total - stats.prompt_seconds - stats.generate_seconds).max(0.0),
            stats.prompt_seconds,
            stats.generate_seconds,
            total,
            self.dropped,
        );
        self.metrics.request_done(stats);
    }

    fn logprob_json(&self, lp: &TokenLogprob) -> wire::TokenLogprob {
        let tok = self.tok;
        let bytes = tok.token_bytes(lp.id);
        wire::TokenLogprob {
            token: String::from_utf8_lossy(&bytes).into_owned(),
            logprob: lp.logprob,
            top_logprobs: lp
                .top
                .iter()
                .map(|&(id, logprob)| {
                    let bytes = tok.token_bytes(id);
                    wire::TopLogprob {
                        token: String::from_utf8_lossy(&bytes).into_owned(),
                        logprob,
                        bytes,
                    }
                })
                .collect(),
            bytes,
        }
    }
}

impl Client for JobClient<'_> {
    fn sampler(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    fn token(&mut self, id: u32, lp: Option<&TokenLogprob>) -> bool {
        if let Some(lp) = lp {
            if self.tx.send(Event::Logprob(self.logprob_json(lp))).is_err() {
                return false;
            }
        }
        let piece = self.dec.as_mut().map(|d| d.push(id)).unwrap_or_default();
        if !piece.is_empty() {
            self.text.push_str(&piece);
            if let Some(at) = first_stop(&self.text, &self.stops) {
                self.text.truncate(at);
                self.stopped_by_text = true;
                return false;
            }
            if self.tx.send(Event::Piece(piece)).is_err() {
                return false;
            }
        }
        true
    }

    fn cancelled(&mut self) -> bool {
        self.tx.is_closed() || INTERRUPTED.load(Ordering::Relaxed)
    }

    fn progress(&mut self, _done: usize, _total: usize) -> bool {
        !self.cancelled()
    }

    fn finish(&mut self, result: Result<Generated, glm_runtime::RuntimeError>) {
        match result {
            Ok(g) => {
                let mut text = std::mem::take(&mut self.text);
                if !self.stopped_by_text {
                    text.push_str(&self.dec.take().map(|d| d.finish()).unwrap_or_default());
                    if let Some(at) = first_stop(&text, &self.stops) {
                        text.truncate(at);
                        self.stopped_by_text = true;
                    }
                }
                let finish = match g.stop {
                    StopReason::Length if !self.stopped_by_text => Finish::Length,
                    _ => Finish::Stop,
                };
                let cancelled = g.stop == StopReason::Cancelled && !self.stopped_by_text;
                let end = if cancelled {
                    "cancelled"
                } else if finish == Finish::Length {
                    "length"
                } else {
                    "stop"
                };
                self.log_end(&g.stats, true, end);
                let mut stats = g.stats.clone();
                stats.generated_tokens = g.ids.len();
                let _ = self.tx.send(Event::Done {
                    text,
                    stats,
                    finish,
                });
            }
            Err(e) => {
                eprintln!("request id={} end=error error={e:?}", self.id);
                let _ = self.tx.send(Event::Failed(e.to_string()));
            }
        }
    }
}

/// The job's constraint (None when nothing is constrained).
fn constraint_for(
    tok: &glm_runtime::Tokenizer,
    output: &OutputSpec,
    shape: Shape,
    stops: &[u32],
) -> Result<Option<glm_runtime::constraint::Constraint>, ConstraintError> {
    if !output.is_constrained() {
        return Ok(None);
    }
    let shape = match shape {
        Shape::Reply(ChatFormat::Chatglm3 | ChatFormat::Glm4) => shape,
        _ => Shape::Text,
    };
    tok.grammars()?.compile(output, shape, stops).map(Some)
}

/// Byte offset of the earliest stop sequence in `text`.
pub(crate) fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// How much of `text` can be shown: up to the first stop sequence, and short of any tail that
/// could be the start of one.
pub(crate) fn safe_len(text: &str, stops: &[String]) -> usize {
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
