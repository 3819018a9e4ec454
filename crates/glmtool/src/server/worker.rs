//! The model thread: loads the model, takes jobs in order, streams events back; requests the
//! model cannot serve are rejected as `Event::Rejected`.

use super::*;

// ---------------------------------------------------------------- the model worker

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
}

/// Loads the model on its own thread and serves jobs until the job channel closes.
/// `context_shift`: chats that do not fit lose their oldest turns (`run`'s policy).
pub(crate) fn spawn_worker(
    margs: ModelArgs,
    jobs: std_mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    context_shift: bool,
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
                run_job(&model, &mut session, job, context_shift);
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

pub(crate) fn run_job(
    model: &glm_runtime::Model,
    session: &mut Session,
    job: Job,
    context_shift: bool,
) {
    let tx = job.tx;
    if tx.is_closed() {
        return; // the client left while queued
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        let _ = tx.send(Event::Failed("the server is shutting down".into()));
        return;
    }
    let tok = &model.tokenizer;
    let n_ctx = session.n_ctx();
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
                        let _ = tx.send(Event::Rejected(format!(
                            "cannot tokenize the messages: {e}"
                        )));
                        return;
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
    if ids.len() >= n_ctx {
        let _ = tx.send(Event::Rejected(format!(
            "the prompt has {} tokens but the context holds {n_ctx}; shorten the conversation \
             (or restart the server with a larger -c, up to the model's {})",
            ids.len(),
            model.hparams.n_ctx_train
        )));
        return;
    }
    if let Some(&(id, _)) = job
        .sampler
        .logit_bias
        .iter()
        .find(|(id, _)| *id as usize >= tok.vocab_size())
    {
        let _ = tx.send(Event::Rejected(format!(
            "logit_bias: token id {id} is outside the vocabulary of {}",
            tok.vocab_size()
        )));
        return;
    }
    let constraint = match constraint_for(tok, &job.output, shape, &stops) {
        Ok(c) => c,
        Err(ConstraintError::Unsupported(e)) => {
            let _ = tx.send(Event::Rejected(match job.structured_field {
                Some(field) if !e.starts_with("tools") => format!("{field}: {e}"),
                _ => e,
            }));
            return;
        }
        Err(e) => {
            let _ = tx.send(Event::Failed(e.to_string()));
            return;
        }
    };
    let room = n_ctx - ids.len();
    let max_new = job.max_tokens.unwrap_or(room).min(room);
    let _ = tx.send(Event::Started {
        prompt_tokens: ids.len(),
        dropped,
    });
    let mut text = String::new();
    let mut dec = tok.stream_decoder();
    let mut sampler = Sampler::new(job.sampler);
    sampler.set_constraint(constraint);
    let mut stopped_by_text = false;
    let t0 = Instant::now();
    let logprob_json = |lp: &TokenLogprob| {
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
    };
    let result = generate_with_logprobs(
        session,
        &ids,
        max_new,
        &mut sampler,
        &stops,
        job.logprobs,
        |id, lp| {
            if let Some(lp) = lp {
                if tx.send(Event::Logprob(logprob_json(lp))).is_err() {
                    return false;
                }
            }
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
        },
    );
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
                "request: {} prompt tokens ({} from cache{}), {} generated in {:.2} s{}",
                g.stats.prompt_tokens,
                g.stats.prompt_tokens - g.stats.prompt_evaluated,
                if dropped > 0 {
                    format!("; context shift dropped {dropped} messages")
                } else {
                    String::new()
                },
                g.stats.generated_tokens,
                t0.elapsed().as_secs_f64(),
                if g.stop == StopReason::Cancelled && !stopped_by_text {
                    " (cancelled)"
                } else {
                    ""
                }
            );
            let mut stats = g.stats.clone();
            stats.generated_tokens = g.ids.len();
            let _ = tx.send(Event::Done {
                text,
                stats,
                finish,
            });
        }
        Err(e) => {
            session.reset();
            let _ = tx.send(Event::Failed(e.to_string()));
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
