//! `glmtool run`: one-shot completion with `-p`/`-f`, or an interactive chat on a terminal
//! (the chat itself is in `repl`).

pub(crate) mod repl;
use crate::args::{ModelArgs, SamplingArgs};
use crate::INTERRUPTED;
use anyhow::{bail, Context, Result};
use glm_runtime::agent;
use glm_runtime::chat::{build_chat_ids_as, completion_ids, stop_ids, Message, Role};
use glm_runtime::constraint::{Constraint, Grammar, OutputSpec, Shape, ToolSpec};
use glm_runtime::generate::{generate_with_progress, Generated, StopReason};
use glm_runtime::sampler::Sampler;
use glm_runtime::tokenizer::ChatFormat;
use glm_runtime::{Model, Session};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Prompt (the user's message; with --raw, text to continue)
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file ('-' = standard input)
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// System message (llama.cpp's -sys)
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Interactive chat even with a prompt: -p's message is the first turn (llama.cpp's -i/-cnv;
    /// without -p a terminal already gets the chat)
    #[arg(short = 'i', long = "interactive", visible_alias = "conversation")]
    pub interactive: bool,
    /// Color the chat prompt and the statistics on a terminal (llama.cpp's --color)
    #[arg(long)]
    pub color: bool,
    /// Maximum new tokens (-1 = until the context is full). Default: -1, in the chat 1024; on
    /// the bundled demo model a short reply (to a blank line, or to the end of a line after 32
    /// tokens; 96 at most)
    #[arg(short = 'n', long = "n-predict", allow_negative_numbers = true)]
    pub n_predict: Option<i64>,
    /// Continue plain text, without the chat format
    #[arg(long)]
    pub raw: bool,
    /// Print one JSON object (prompt_ids, ids, text, timings)
    #[arg(long)]
    pub json: bool,
    /// Print the seed and other details to stderr
    #[arg(short, long)]
    pub verbose: bool,
    /// The conversation so far (ChatGLM3 message JSON, as `tokenize --chat`); the reply continues it
    #[arg(long, conflicts_with = "raw")]
    pub chat: Option<PathBuf>,
    /// Register tools (a JSON list of {name, description, parameters}); a tool call is printed as JSON
    #[arg(long, conflicts_with = "raw")]
    pub tools: Option<PathBuf>,
    /// Use ChatGLM3's code-interpreter system prompt
    #[arg(long, conflicts_with_all = ["raw", "tools", "system"])]
    pub interpreter: bool,
    /// Run the model's code-interpreter cells with python3 and feed the result back (10 s, 8 KiB
    /// of output; on Linux in its own PID and network namespaces with rlimits and a minimal
    /// environment: docs/server.md); without it the code is shown and, on a terminal, the result
    /// asked for
    #[arg(long, requires = "interpreter")]
    pub allow_exec: bool,
    /// Stop when the output ends with this text (llama.cpp's reverse prompt; repeatable); the
    /// text is printed, then the run ends
    #[arg(short = 'r', long = "reverse-prompt")]
    pub reverse_prompt: Vec<String>,
    /// Process escapes (\n \r \t \' \" \\ \xHH) in -p, --system and -r: on by default, as in
    /// llama.cpp
    #[arg(short = 'e', long = "escape", overrides_with = "no_escape")]
    pub escape: bool,
    /// Keep backslashes in -p, --system and -r as typed
    #[arg(long = "no-escape")]
    pub no_escape: bool,
    /// The reply is JSON valid against this JSON Schema (the schema's text, or a file holding
    /// it); constrained decoding, docs/server.md
    #[arg(short = 'j', long = "json-schema", value_name = "SCHEMA|FILE",
          conflicts_with_all = ["json_schema_file", "grammar", "grammar_file"])]
    pub json_schema: Option<String>,
    /// --json-schema from a file
    #[arg(long = "json-schema-file", value_name = "FILE", conflicts_with_all = ["grammar", "grammar_file"])]
    pub json_schema_file: Option<PathBuf>,
    /// The reply is a sentence of this GBNF grammar (llama.cpp's format, `root` first)
    #[arg(long = "grammar", value_name = "GBNF", conflicts_with = "grammar_file")]
    pub grammar: Option<String>,
    /// --grammar from a file
    #[arg(long = "grammar-file", value_name = "FILE")]
    pub grammar_file: Option<PathBuf>,
}

/// The reply's grammar from --json-schema, --json-schema-file, --grammar or --grammar-file.
pub(super) fn output_grammar(a: &Args) -> Result<Option<Grammar>> {
    let read = |flag: &str, path: &std::path::Path| -> Result<String> {
        std::fs::read_to_string(path).with_context(|| format!("{flag}: reading {}", path.display()))
    };
    let schema = |flag: &str, text: &str, from: &str| -> Result<Grammar> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{flag}: {from} is not JSON: {e}"))?;
        Ok(Grammar::JsonSchema(v))
    };
    Ok(
        match (
            &a.json_schema,
            &a.json_schema_file,
            &a.grammar,
            &a.grammar_file,
        ) {
            (Some(s), ..) => {
                let t = s.trim_start();
                if t.starts_with('{') || t == "true" || t == "false" {
                    Some(schema("--json-schema", s, "the schema")?)
                } else {
                    let path = std::path::Path::new(s);
                    if !path.exists() {
                        bail!(
                            "--json-schema: {s:?} is neither a JSON Schema (an object) nor a file"
                        );
                    }
                    Some(schema(
                        "--json-schema",
                        &read("--json-schema", path)?,
                        &path.display().to_string(),
                    )?)
                }
            }
            (_, Some(f), ..) => Some(schema(
                "--json-schema-file",
                &read("--json-schema-file", f)?,
                &f.display().to_string(),
            )?),
            (_, _, Some(g), _) => Some(Grammar::Gbnf(g.clone())),
            (_, _, _, Some(f)) => Some(Grammar::Gbnf(read("--grammar-file", f)?)),
            _ => None,
        },
    )
}

/// The flag that gave the grammar (errors name it).
pub(super) fn grammar_flag(a: &Args) -> &'static str {
    match (&a.json_schema, &a.json_schema_file, &a.grammar) {
        (Some(_), ..) => "--json-schema",
        (_, Some(_), _) => "--json-schema-file",
        (_, _, Some(_)) => "--grammar",
        _ => "--grammar-file",
    }
}

/// The constraint of one reply: `grammar` for the content (None: free text); a chat with
/// tools may also call one of them.
pub(super) fn reply_constraint(
    model: &Model,
    grammar: Option<&Grammar>,
    chat: Option<ChatFormat>,
    messages: &[Message],
    stops: &[u32],
    flag: &str,
) -> Result<Option<Constraint>> {
    let Some(grammar) = grammar else {
        return Ok(None);
    };
    let tools = messages
        .iter()
        .find_map(|m| m.tools.as_ref())
        .and_then(|t| agent::normalize_tools(t).ok())
        .map(|t| ToolSpec::from_tools(&t))
        .unwrap_or_default();
    let (shape, tools) = match chat {
        Some(f @ (ChatFormat::Chatglm3 | ChatFormat::Glm4)) => (Shape::Reply(f), tools),
        _ => (Shape::Text, Vec::new()),
    };
    let spec = OutputSpec {
        content: Some(grammar.clone()),
        tools,
        call_required: false,
    };
    model
        .tokenizer
        .grammars()?
        .compile(&spec, shape, stops)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// Prints a ChatGLM3 reply as it streams: the metadata line (empty for plain answers) is held
/// back, leading whitespace of the content is dropped, as THUDM's `process_response` does.
pub(super) struct ReplyPrinter {
    raw: bool,
    in_content: bool,
    started: bool,
    metadata: String,
}

impl ReplyPrinter {
    pub(super) fn new(raw: bool) -> Self {
        ReplyPrinter {
            raw,
            in_content: raw,
            started: false,
            metadata: String::new(),
        }
    }
    /// At the end of a reply: text held back as a possible metadata line when no newline ever
    /// came was the answer itself (`process_response` treats such a reply as plain text).
    pub(super) fn finish(&mut self) -> String {
        if self.in_content {
            return String::new();
        }
        self.in_content = true;
        std::mem::take(&mut self.metadata).trim().to_string()
    }

    /// Returns the part of `text` to show.
    pub(super) fn feed<'a>(&mut self, mut text: &'a str) -> &'a str {
        if self.raw {
            return text;
        }
        if !self.in_content {
            match text.find('\n') {
                None => {
                    self.metadata.push_str(text);
                    return "";
                }
                Some(i) => {
                    self.metadata.push_str(&text[..i]);
                    self.in_content = true;
                    text = &text[i + 1..];
                }
            }
        }
        if !self.started {
            text = text.trim_start();
            self.started = !text.is_empty();
        }
        text
    }
}

/// How long a reply may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplyLength {
    /// `-n N`.
    Tokens(usize),
    /// `-n -1` (or a one-shot run without -n): until the context is full.
    Unlimited,
    /// The chat without -n: [`repl::DEFAULT_REPLY_TOKENS`].
    ChatDefault,
    /// The demo model without -n: a short reply ([`Shaper`]).
    Demo,
}

impl ReplyLength {
    /// `-n`'s value (None: not given) in a chat or not, on the demo model or not.
    pub(super) fn of(n_predict: Option<i64>, chat: bool, demo: bool) -> Self {
        match n_predict {
            Some(n) if n < 0 => ReplyLength::Unlimited,
            Some(n) => ReplyLength::Tokens(n as usize),
            None if demo => ReplyLength::Demo,
            None if chat => ReplyLength::ChatDefault,
            None => ReplyLength::Unlimited,
        }
    }

    /// The most new tokens whatever the room in the context (None: no limit).
    pub(super) fn limit(self) -> Option<usize> {
        match self {
            ReplyLength::Tokens(n) => Some(n),
            ReplyLength::Unlimited => None,
            ReplyLength::ChatDefault => Some(repl::DEFAULT_REPLY_TOKENS),
            ReplyLength::Demo => Some(DEMO_MAX_TOKENS),
        }
    }

    /// The most new tokens with `room` left in the context.
    pub(super) fn cap(self, room: usize) -> usize {
        self.limit().map_or(room, |n| n.min(room))
    }
}

/// The demo model's replies without -n end at a blank line, or at the end of the first line
/// that ends after this many tokens...
pub(super) const DEMO_LINE_TOKENS: usize = 32;
/// ...and have at most this many tokens. The demo model was trained on fortune cookies only
/// (tests/fixtures/tiny-chatglm3), so left alone it rambles until the context is full.
pub(super) const DEMO_MAX_TOKENS: usize = 96;

/// Shapes the shown text of a demo-model reply ([`ReplyLength::Demo`]): whitespace is held
/// back until text follows it, so a reply never ends in blank space on screen, and the reply
/// ends at a blank line or, after [`DEMO_LINE_TOKENS`] tokens, at the end of a line. Other
/// replies pass through unchanged.
pub(super) struct Shaper {
    active: bool,
    tokens: usize,
    held: String,
    /// Why the reply ended, once it has.
    pub(super) stop: Option<&'static str>,
}

impl Shaper {
    pub(super) fn new(length: ReplyLength) -> Self {
        Shaper {
            active: length == ReplyLength::Demo,
            tokens: 0,
            held: String::new(),
            stop: None,
        }
    }

    /// The shown text of one more token; returns what to print now (nothing once stopped).
    pub(super) fn feed(&mut self, shown: &str) -> String {
        if !self.active {
            return shown.to_string();
        }
        if self.stop.is_some() {
            return String::new();
        }
        self.tokens += 1;
        let body = shown.trim_end();
        let mut out = String::new();
        if !body.is_empty() {
            out = std::mem::take(&mut self.held);
            out.push_str(body);
        }
        self.held.push_str(&shown[body.len()..]);
        let newlines = self.held.matches('\n').count();
        if newlines >= 2 {
            self.stop = Some("blank line");
        } else if newlines == 1 && self.tokens >= DEMO_LINE_TOKENS {
            self.stop = Some("end of line");
        }
        out
    }
}

fn max_new(length: ReplyLength, session: &Session, prompt_len: usize) -> usize {
    length.cap(session.n_ctx().saturating_sub(prompt_len))
}

pub fn run(mut a: Args) -> Result<()> {
    if !a.no_escape {
        let esc = |s: &mut String| -> Result<()> {
            *s = crate::compat::process_escapes(s).map_err(anyhow::Error::msg)?;
            Ok(())
        };
        a.prompt.iter_mut().try_for_each(esc)?;
        a.system.iter_mut().try_for_each(esc)?;
        a.reverse_prompt.iter_mut().try_for_each(esc)?;
    }
    if a.reverse_prompt.iter().any(String::is_empty) {
        bail!("-r/--reverse-prompt: an empty text would stop at once");
    }
    let prompt = match (&a.prompt, &a.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_prompt_file(f)?),
        (None, None) => None,
    };
    let model = a.model.load(1, a.verbose)?;
    let opts = a.model.session_options(&model)?;
    let mut session = Session::new(&model, &opts)?;
    let sopts = a.sampling.options()?;
    if a.verbose {
        eprintln!(
            "model: {} ({} layers, context {}), threads {}, seed {}, {}",
            model.name,
            model.hparams.n_layer,
            session.n_ctx(),
            opts.n_threads,
            sopts.seed,
            glm_runtime::system_info()
        );
    }
    let mut sampler = Sampler::new(sopts);
    match mode(&a, &model) {
        Mode::Chat(ChatFormat::Chatglm3) => {}
        Mode::Chat(ChatFormat::Glm4) if a.interpreter => bail!(
            "--interpreter is ChatGLM3's code-interpreter protocol; GLM-4 takes --tools"
        ),
        Mode::Chat(ChatFormat::Glm4) => {}
        Mode::Chat(f) if a.tools.is_some() || a.interpreter => bail!(
            "--tools and --interpreter follow ChatGLM3's tool protocol; this model's prompt format is {}",
            f.as_str()
        ),
        Mode::Completion if prompt.is_none() || a.interactive => bail!(
            "{} is a base or code model: it completes text, it does not chat; pass -p TEXT \
             (or --chat FILE to use its family's chat format anyway)",
            model.name
        ),
        _ => {}
    }
    match prompt {
        _ if a.interactive && (a.json || a.raw) => {
            bail!("-i/--interactive is a chat: it does not go with --json or --raw")
        }
        Some(p) if a.interactive => repl::interactive(&a, &model, &mut session, &mut sampler, Some(&p)),
        Some(p) => one_shot(&a, &model, &mut session, &mut sampler, Some(&p)),
        None if a.chat.is_some() && !a.interactive => one_shot(&a, &model, &mut session, &mut sampler, None),
        None if (a.tools.is_some() || a.interpreter) && !std::io::stdin().is_terminal() => {
            bail!("--tools and --interpreter need a prompt (-p/-f), a conversation (--chat) or a terminal")
        }
        None if (std::io::stdin().is_terminal() || a.interactive) && !a.json => repl::interactive(&a, &model, &mut session, &mut sampler, None),
        None => bail!("no prompt: pass -p TEXT or -f FILE ('-' for standard input), or run on a terminal to chat"),
    }
}

fn read_prompt_file(f: &PathBuf) -> Result<String> {
    let mut bytes = Vec::new();
    if f.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the prompt from standard input")?;
    } else {
        bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not valid UTF-8 (byte {})",
            if f.as_os_str() == "-" {
                "standard input".into()
            } else {
                f.display().to_string()
            },
            e.utf8_error().valid_up_to()
        )
    })
}

/// How `run` turns the prompt into ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `--raw`: the text's ids, nothing added.
    Raw,
    /// A base or code model: `[gMASK] sop` and the text, as THUDM's `generate` does.
    Completion,
    /// A chat in this format.
    Chat(ChatFormat),
}

fn mode(a: &Args, model: &Model) -> Mode {
    let tok = &model.tokenizer;
    match tok.chat_format() {
        _ if a.raw => Mode::Raw,
        // a base model gets a chat only when one is asked for (--chat, --tools, --interpreter)
        ChatFormat::Completion if a.chat.is_some() || a.tools.is_some() || a.interpreter => {
            Mode::Chat(tok.vocab_chat_format())
        }
        ChatFormat::Completion => Mode::Completion,
        f => Mode::Chat(f),
    }
}

fn prompt_ids(a: &Args, model: &Model, messages: &[Message], raw_text: &str) -> Result<Vec<u32>> {
    Ok(match mode(a, model) {
        Mode::Raw => model.tokenizer.encode(raw_text)?,
        Mode::Completion => completion_ids(&model.tokenizer, raw_text)?,
        Mode::Chat(f) => build_chat_ids_as(&model.tokenizer, f, messages)?,
    })
}

fn one_shot(
    a: &Args,
    model: &Model,
    session: &mut Session,
    sampler: &mut Sampler,
    prompt: Option<&str>,
) -> Result<()> {
    let format = match mode(a, model) {
        Mode::Chat(f) => f,
        _ => ChatFormat::Completion,
    };
    let mut messages = one_shot_messages(a, format, prompt)?;
    for _round in 0..MAX_AGENT_ROUNDS {
        let ids = prompt_ids(a, model, &messages, prompt.unwrap_or_default())?;
        if ids.is_empty() {
            bail!("the prompt is empty");
        }
        // replies without a metadata line: printed as they come
        let plain = matches!(
            mode(a, model),
            Mode::Raw | Mode::Completion | Mode::Chat(ChatFormat::Chatglm2)
        );
        let stops = if plain {
            vec![model.tokenizer.special().eos]
        } else {
            stop_ids(&model.tokenizer)
        };
        let grammar = output_grammar(a)?;
        let mut length = ReplyLength::of(
            a.n_predict,
            false,
            crate::models::uses_demo(a.model.model.as_deref()),
        );
        if grammar.is_some() && length == ReplyLength::Demo {
            // the grammar decides where the reply ends, not the demo's line rule
            length = ReplyLength::Unlimited;
        }
        let chat = match mode(a, model) {
            Mode::Chat(f) => Some(f),
            _ => None,
        };
        sampler.set_constraint(reply_constraint(
            model,
            grammar.as_ref(),
            chat,
            &messages,
            &stops,
            grammar_flag(a),
        )?);
        let n = max_new(length, session, ids.len());
        let mut shaper = Shaper::new(length);
        let mut out = std::io::stdout().lock();
        let mut dec = model.tokenizer.stream_decoder();
        let mut printer = ReplyPrinter::new(plain);
        let mut write_err = None;
        // the text so far, for -r (only as long as the longest reverse prompt needs)
        let keep = a.reverse_prompt.iter().map(String::len).max().unwrap_or(0);
        let mut tail = String::new();
        let mut reversed = false;
        let spinner = std::cell::RefCell::new(crate::progress::Spinner::start(format!(
            "reading the prompt ({} tokens)",
            ids.len()
        )));
        let progress = repl::prompt_progress(&spinner, session.reusable_prefix(&ids));
        let g = generate_with_progress(
            session,
            &ids,
            n,
            sampler,
            &stops,
            None,
            progress,
            |id, _| {
                spinner.borrow_mut().stop();
                let piece = dec.push(id);
                let go_on = !INTERRUPTED.load(Ordering::Relaxed);
                if keep > 0 {
                    tail.push_str(&piece);
                    if a.reverse_prompt.iter().any(|r| tail.ends_with(r.as_str())) {
                        reversed = true;
                    }
                    if tail.len() > 2 * keep + 64 {
                        let mut cut = tail.len() - keep;
                        while !tail.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        tail.drain(..cut);
                    }
                }
                let shown = shaper.feed(printer.feed(&piece));
                let go_on = go_on && !reversed && shaper.stop.is_none();
                if a.json {
                    return go_on;
                }
                if let Err(e) = out.write_all(shown.as_bytes()).and_then(|_| out.flush()) {
                    write_err = Some(e);
                    return false;
                }
                go_on
            },
        )?;
        spinner.borrow_mut().stop();
        if repl::stopped_in_prompt(&g) {
            bail!("interrupted");
        }
        if let Some(e) = write_err {
            return Err(e.into());
        }
        let text = model.tokenizer.decode(&g.ids)?;
        let (tool_call, history) = agent_reply(a, format, &messages, &text);
        if a.json {
            let (metadata, content) = if a.raw {
                (String::new(), text.clone())
            } else {
                agent::split_segment(&text)
            };
            let obj = serde_json::json!({
                "prompt_ids": ids,
                "ids": g.ids,
                "text": text,
                "metadata": metadata,
                "content": content,
                "stop": match (reversed, shaper.stop) {
                    (true, _) => "reverse prompt".to_string(),
                    (false, Some(why)) => why.to_string(),
                    (false, None) => stop_name(&g, model),
                },
                "tool_call": tool_call.as_ref().map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments})),
                "messages": history,
                "timings": g.stats,
                "load_ms": model.load_time.as_secs_f64() * 1e3,
            });
            writeln!(out, "{obj}")?;
            return Ok(());
        }
        let tail = dec.finish();
        let tail = shaper.feed(printer.feed(&tail));
        out.write_all(tail.as_bytes())?;
        let held = shaper.feed(&printer.finish());
        out.write_all(held.as_bytes())?;
        writeln!(out)?;
        if let Some(c) = &tool_call {
            let call = serde_json::json!({"tool_call": {"name": c.name, "arguments": c.arguments}});
            writeln!(out, "{call}")?;
        }
        drop(out);
        print_stats(model, &g);
        if a.verbose {
            let (cpu, gpu) = session.compute_bytes_split();
            let b = |n: u64| glm_runtime::plan::fmt_bytes(n);
            eprintln!(
                "buffers     = KV {}, compute {} CPU + {} GPU (planned {} + {})",
                b(session.cache_bytes() as u64),
                b(cpu as u64),
                b(gpu as u64),
                b(model.plan.cpu.compute),
                b(model.plan.gpu.compute)
            );
        }
        match next_observation(a, tool_call.is_some(), &history, &mut ask_stdin)? {
            Some(obs) => {
                messages = history;
                messages.push(obs);
            }
            None => return Ok(()),
        }
    }
    bail!("stopped after {MAX_AGENT_ROUNDS} tool rounds in one run")
}

/// Tool or interpreter rounds one `run -p` may take before giving up.
pub(super) const MAX_AGENT_ROUNDS: usize = 8;

/// A one-shot run's question for a tool's or the code's result: a line of standard input when
/// it is a terminal (None: an empty line, or no terminal).
fn ask_stdin(what: &str) -> Result<Option<String>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("{what} (empty line to stop)> ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let line = line.trim_end_matches(['\n', '\r']);
    Ok((!line.is_empty()).then(|| line.to_string()))
}

/// What to feed back after a reply: the user's tool result (asked with `ask_line`), the output
/// of the model's code (`--allow-exec`), or nothing (the run ends).
pub(super) fn next_observation(
    a: &Args,
    is_tool_call: bool,
    history: &[Message],
    ask_line: &mut dyn FnMut(&str) -> Result<Option<String>>,
) -> Result<Option<Message>> {
    let code = history
        .last()
        .filter(|m| m.role == Role::Assistant && m.metadata == "interpreter")
        .and_then(|m| agent::extract_code(&m.content));
    let mut ask =
        |what: &str| -> Result<Option<Message>> { Ok(ask_line(what)?.map(Message::observation)) };
    if is_tool_call {
        return ask("tool result");
    }
    let Some(code) = code else { return Ok(None) };
    if a.allow_exec {
        eprintln!("(running the model's code with python3)");
        return Ok(Some(
            match crate::sandbox::run_python(&code, crate::sandbox::Limits::default()) {
                Ok(out) => agent::result_observation(&out),
                Err(err) => agent::error_observation(&err),
            },
        ));
    }
    eprintln!("(the model wants to run this code; pass --allow-exec to run it)\n{code}");
    ask("code result")
}

/// The messages of a one-shot reply: `--chat`'s conversation (or `-s`), the tools or
/// code-interpreter system message when asked for and not already there, then the prompt.
fn one_shot_messages(a: &Args, format: ChatFormat, prompt: Option<&str>) -> Result<Vec<Message>> {
    let mut messages = base_messages(a, format)?;
    if let Some(p) = prompt {
        messages.push(Message::new(Role::User, p.to_string()));
    }
    if messages.is_empty() {
        bail!("the conversation is empty");
    }
    Ok(messages)
}

/// `--chat`'s conversation (or `-s`), with the tools or code-interpreter system message when
/// asked for and not already there.
pub(super) fn base_messages(a: &Args, format: ChatFormat) -> Result<Vec<Message>> {
    let mut messages = match &a.chat {
        Some(path) => crate::cmd::tokenize::read_messages(path)?,
        None => Vec::new(),
    };
    let has_system = messages.first().is_some_and(|m| m.role == Role::System);
    if let Some(path) = &a.tools {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let tools =
            agent::normalize_tools(&v).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !messages
            .iter()
            .any(|m| m.role == Role::System && m.tools.is_some())
        {
            messages.insert(
                0,
                if format == ChatFormat::Glm4 {
                    // GLM-4's template renders the tools into its own system section
                    let mut m = Message::system("");
                    m.tools = Some(tools);
                    m
                } else {
                    agent::tools_system_message(tools)
                },
            );
        }
    } else if a.interpreter && !has_system {
        messages.insert(0, agent::interpreter_system_message());
    }
    if a.chat.is_none() {
        if let Some(s) = &a.system {
            messages.insert(0, Message::new(Role::System, s.clone()));
        }
    }
    Ok(messages)
}

/// The tool call of a reply (with tools registered) and the history that includes the reply.
pub(super) fn agent_reply(
    a: &Args,
    format: ChatFormat,
    messages: &[Message],
    text: &str,
) -> (Option<agent::ToolCall>, Vec<Message>) {
    let tools = messages
        .iter()
        .any(|m| m.role == Role::System && m.tools.is_some());
    let segments = if a.raw {
        Vec::new()
    } else {
        agent::parse_reply_as(format, text, tools)
    };
    let mut history = messages.to_vec();
    history.extend(segments.iter().map(agent::Segment::to_message));
    let call = segments.into_iter().find_map(|s| match s {
        agent::Segment::ToolCall(c) => Some(c),
        _ => None,
    });
    (call, history)
}

fn stop_name(g: &Generated, model: &Model) -> String {
    match g.stop {
        StopReason::Stop(id) => model.tokenizer.token(id).unwrap_or("?").to_string(),
        StopReason::Length => "length".into(),
        StopReason::Cancelled => "cancelled".into(),
    }
}

fn print_stats(model: &Model, g: &Generated) {
    let s = &g.stats;
    eprintln!();
    eprintln!(
        "load time   = {:10.2} ms",
        model.load_time.as_secs_f64() * 1e3
    );
    eprintln!(
        "prompt eval = {:10.2} ms / {:5} tokens ({:8.2} tokens per second; {} from cache)",
        s.prompt_seconds * 1e3,
        s.prompt_evaluated,
        s.prompt_tps(),
        s.prompt_tokens - s.prompt_evaluated
    );
    eprintln!(
        "eval        = {:10.2} ms / {:5} tokens ({:8.2} tokens per second)",
        s.generate_seconds * 1e3,
        s.generated_tokens,
        s.generate_tps()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a shaper prints of `pieces`, and why it stopped.
    fn shape(length: ReplyLength, pieces: &[&str]) -> (String, Option<&'static str>) {
        let mut s = Shaper::new(length);
        let shown: String = pieces.iter().map(|p| s.feed(p)).collect();
        (shown, s.stop)
    }

    #[test]
    fn demo_replies_end_at_a_blank_line_or_a_late_line_end() {
        // a blank line (even with spaces on it) ends the reply; the whitespace is not shown
        assert_eq!(
            shape(ReplyLength::Demo, &["a", " b", "\n", " \n", "c"]),
            ("a b".to_string(), Some("blank line"))
        );
        // a line end before DEMO_LINE_TOKENS goes on; whitespace inside is shown
        assert_eq!(
            shape(ReplyLength::Demo, &["a", "\n", "\tb"]),
            ("a\n\tb".to_string(), None)
        );
        // after DEMO_LINE_TOKENS, the end of the line ends it
        let mut pieces = vec!["w"; DEMO_LINE_TOKENS];
        pieces.extend(["x\n", "y"]);
        let (shown, stop) = shape(ReplyLength::Demo, &pieces);
        assert_eq!(stop, Some("end of line"));
        assert_eq!(shown, "w".repeat(DEMO_LINE_TOKENS) + "x");
        // other lengths pass everything through
        assert_eq!(
            shape(ReplyLength::Tokens(5), &["a", "\n\n", "b "]),
            ("a\n\nb ".to_string(), None)
        );
    }

    #[test]
    fn reply_lengths() {
        assert_eq!(ReplyLength::of(None, false, true), ReplyLength::Demo);
        assert_eq!(ReplyLength::of(None, true, false), ReplyLength::ChatDefault);
        assert_eq!(ReplyLength::of(None, false, false), ReplyLength::Unlimited);
        assert_eq!(
            ReplyLength::of(Some(-1), true, true),
            ReplyLength::Unlimited
        );
        assert_eq!(
            ReplyLength::of(Some(7), false, true),
            ReplyLength::Tokens(7)
        );
        assert_eq!(ReplyLength::Tokens(7).cap(5), 5);
        assert_eq!(ReplyLength::Unlimited.cap(5), 5);
        assert_eq!(ReplyLength::Demo.cap(500), DEMO_MAX_TOKENS);
    }

    #[test]
    fn printer_hides_metadata_line_and_leading_space() {
        let mut p = ReplyPrinter::new(false);
        let shown: String = [" ", "\n", " Hel", "lo\n", "world"]
            .iter()
            .map(|s| p.feed(s).to_string())
            .collect();
        assert_eq!(shown, "Hello\nworld");
        assert_eq!(p.finish(), "");
        // a reply without any newline is plain text, shown when it ends
        let mut p = ReplyPrinter::new(false);
        assert_eq!(p.feed(" a fortune"), "");
        assert_eq!(p.finish(), "a fortune");
        assert_eq!(
            agent::split_segment(" \n Hello "),
            (String::new(), "Hello".into())
        );
        assert_eq!(
            agent::split_segment("get_weather\n```python\ntool_call(city='x')\n```").0,
            "get_weather"
        );
    }
}
