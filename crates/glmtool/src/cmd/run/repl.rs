//! `glmtool run`'s interactive chat on a terminal: slash commands (ollama's `/set` and `/show`
//! among them), multi-line input, a persistent input history, statistics, saving and loading
//! the conversation.
//!
//! Input: rustyline reads the lines at the prompt. While a reply streams, the terminal is in
//! reply mode (`crate::term`): what is typed then is neither echoed nor lost but queued, and
//! the next prompts read it in order, as if typed there (ollama's type-ahead).

use super::{
    agent_reply, base_messages, next_observation, Args, ReplyLength, ReplyPrinter, Shaper,
    MAX_AGENT_ROUNDS,
};
use crate::progress::Spinner;
use crate::INTERRUPTED;
use anyhow::{bail, Result};
use glm_runtime::chat::{build_chat_ids, stop_ids, Message, Role};
use glm_runtime::constraint::Grammar;
use glm_runtime::generate::{generate_with_progress, GenerateStats, Generated, StopReason};
use glm_runtime::sampler::Sampler;
use glm_runtime::tokenizer::ChatFormat;
use glm_runtime::{Model, Session};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Reply length in the chat when `-n` is not given (or the room left in the context, if less).
pub const DEFAULT_REPLY_TOKENS: usize = 1024;

/// The line that starts and ends a multi-line message.
const BLOCK: &str = "\"\"\"";

const PROMPT: &str = "> ";
const MORE_PROMPT: &str = "... ";
/// ANSI: bold green for the prompt, cyan for the statistics.
const PROMPT_COLOR: &str = "\x1b[1;32m";
const STATS_COLOR: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// The chat: `first` (`-i -p TEXT`) is the first user turn.
pub fn interactive<'a>(
    a: &'a Args,
    model: &'a Model,
    session: &mut Session<'a>,
    sampler: &mut Sampler,
    first: Option<&str>,
) -> Result<()> {
    let config = rustyline::Config::builder()
        .max_history_size(1000)?
        .auto_add_history(false)
        .build();
    let mut rl = DefaultEditor::with_config(config)?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    let format = model.tokenizer.chat_format();
    let (base, turns) = split_conversation(base_messages(a, format)?);
    let mut chat = Chat {
        a,
        model,
        base,
        turns,
        stops: stop_ids(&model.tokenizer),
        last: None,
        stats_color: a.color && std::io::stderr().is_terminal(),
        length: ReplyLength::of(
            a.n_predict,
            true,
            crate::models::uses_demo(a.model.model.as_deref()),
        ),
        verbose: a.verbose,
        format: super::output_grammar(a)?,
    };
    let (prompt, more) = if a.color && std::io::stdout().is_terminal() {
        (
            format!("{PROMPT_COLOR}{PROMPT}{RESET}"),
            format!("{PROMPT_COLOR}{MORE_PROMPT}{RESET}"),
        )
    } else {
        (PROMPT.to_string(), MORE_PROMPT.to_string())
    };
    eprintln!(
        "glmtool chat with {} — /help lists the commands; Ctrl-C stops a reply, Ctrl-D quits",
        model.name
    );
    if let Some(text) = first {
        chat.turn(session, sampler, text, &mut |what| ask_line(&mut rl, what));
    }
    let mut input = Collector::default();
    loop {
        let line = match rl.readline(if input.pending() { &more } else { &prompt }) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                if input.pending() {
                    input = Collector::default();
                    eprintln!("(message discarded)");
                }
                eprintln!("(Ctrl-D or /exit quits)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let Some((text, single_line)) = input.push(&line) else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(if single_line { line.trim_end() } else { &text });
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = rl.append_history(h);
        }
        if single_line {
            if let Some((name, arg)) = command(&text) {
                if chat.command(session, sampler, name, arg) == Flow::Quit {
                    break;
                }
                continue;
            }
        }
        chat.turn(session, sampler, &text, &mut |what| ask_line(&mut rl, what));
    }
    Ok(())
}

/// Asks for a tool's or the code's result at its own prompt; None (stop) on an empty line,
/// Ctrl-C or Ctrl-D.
fn ask_line(rl: &mut DefaultEditor, what: &str) -> Result<Option<String>> {
    match rl.readline(&format!("{what} (empty line to stop)> ")) {
        Ok(l) if l.trim().is_empty() => Ok(None),
        Ok(l) => Ok(Some(l)),
        Err(ReadlineError::Interrupted | ReadlineError::Eof) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Where the input history lives: `$XDG_DATA_HOME/glmtool/history.txt`, else
/// `$HOME/.local/share/glmtool/history.txt`; none with `GLMTOOL_NO_HISTORY` set.
fn history_path() -> Option<PathBuf> {
    if std::env::var_os("GLMTOOL_NO_HISTORY").is_some() {
        return None;
    }
    let dir = match std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d,
        _ => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?)
            .join(".local")
            .join("share"),
    };
    Some(dir.join("glmtool").join("history.txt"))
}

/// A slash command: `/word` (letters only) or `/?`, and the rest of the line. Other lines, like
/// `/usr/bin is…`, are messages.
fn command(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    let (name, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(n, r)| (n, r.trim()));
    let word = name.strip_prefix('/')?;
    let is_command =
        word == "?" || (!word.is_empty() && word.chars().all(|c| c.is_ascii_alphabetic()));
    is_command.then_some((name, rest))
}

/// Joins input lines into messages: a `"""` line starts a block that ends at the next `"""`
/// line; a line ending in `\` continues on the next one (the backslash becomes a newline).
#[derive(Default)]
struct Collector {
    block: Option<Vec<String>>,
    continued: Option<String>,
}

impl Collector {
    /// Inside a block or a continued line.
    fn pending(&self) -> bool {
        self.block.is_some() || self.continued.is_some()
    }

    /// Feeds one line read; returns the message when it is complete, and whether it was a
    /// single line (only those can be commands).
    fn push(&mut self, line: &str) -> Option<(String, bool)> {
        if let Some(block) = &mut self.block {
            if line.trim_end() == BLOCK {
                let text = block.join("\n");
                self.block = None;
                return Some((text, false));
            }
            block.push(line.to_string());
            return None;
        }
        let head = self.continued.take();
        if head.is_none() && line.trim_end() == BLOCK {
            self.block = Some(Vec::new());
            return None;
        }
        let single = head.is_none() && !line.contains('\n');
        let mut text = head.unwrap_or_default();
        match line.strip_suffix('\\') {
            Some(part) => {
                text.push_str(part);
                text.push('\n');
                self.continued = Some(text);
                None
            }
            None => {
                text.push_str(line);
                Some((text, single))
            }
        }
    }
}

/// Splits a conversation into its leading system messages and turns (each from a user message
/// on; messages before the first one make a turn of their own). The context-full policy drops
/// the oldest turns (here, and in `serve --context-shift`).
pub(crate) fn split_conversation(messages: Vec<Message>) -> (Vec<Message>, Vec<Vec<Message>>) {
    let mut base = Vec::new();
    let mut turns: Vec<Vec<Message>> = Vec::new();
    for m in messages {
        if turns.is_empty() && m.role == Role::System {
            base.push(m);
        } else if m.role == Role::User || turns.is_empty() {
            turns.push(vec![m]);
        } else {
            turns.last_mut().expect("a turn").push(m);
        }
    }
    (base, turns)
}

#[derive(PartialEq)]
enum Flow {
    Continue,
    Quit,
}

/// Statistics of one reply.
struct ReplyStats {
    stats: GenerateStats,
    kv_used: usize,
    n_ctx: usize,
}

/// ollama's `/set parameter` names: the flag each one is, and what its value means.
const PARAMETERS: &[(&str, &str)] = &[
    ("temperature", "--temp: 0 = greedy"),
    ("top_k", "--top-k: 0 = off"),
    ("top_p", "--top-p: 1 = off"),
    ("repeat_penalty", "--repeat-penalty: 1 = off"),
    ("repeat_last_n", "--repeat-last-n"),
    ("seed", "-s"),
    (
        "num_ctx",
        "-c: context tokens (a new cache; the conversation stays)",
    ),
    (
        "num_predict",
        "-n: most tokens of a reply, -1 = until the context is full",
    ),
];

struct Chat<'a> {
    a: &'a Args,
    model: &'a Model,
    /// The system messages.
    base: Vec<Message>,
    /// Each turn: the user's message, the reply, and any tool rounds (call, observation, reply).
    turns: Vec<Vec<Message>>,
    stops: Vec<u32>,
    last: Option<ReplyStats>,
    stats_color: bool,
    /// `-n`, or `/set parameter num_predict`.
    length: ReplyLength,
    /// Statistics after each reply (`-v`, `/set verbose`).
    verbose: bool,
    /// The replies' grammar (`--json-schema`, `--grammar`, `/set format json`).
    format: Option<Grammar>,
}

/// A tool's or the code's result, asked for at its own prompt (None: stop).
type Ask<'x> = dyn FnMut(&str) -> Result<Option<String>> + 'x;

impl<'a> Chat<'a> {
    fn agent_mode(&self) -> bool {
        self.base.iter().any(|m| m.tools.is_some()) || self.a.interpreter
    }

    fn messages(&self) -> Vec<Message> {
        let mut m = self.base.clone();
        m.extend(self.turns.iter().flatten().cloned());
        m
    }

    /// The reply length, in words.
    fn length_text(&self) -> String {
        match self.length {
            ReplyLength::Tokens(n) => format!("{n} tokens (-n)"),
            ReplyLength::Unlimited => "until the context is full (-n -1)".into(),
            ReplyLength::ChatDefault => format!(
                "{} tokens (the chat's default; -n N sets another)",
                DEFAULT_REPLY_TOKENS
            ),
            ReplyLength::Demo => format!(
                "{} tokens, ending at a blank line or at the end of a line after {} (the demo \
                 model's default; -n N sets another)",
                super::DEMO_MAX_TOKENS,
                super::DEMO_LINE_TOKENS
            ),
        }
    }

    fn help(&self) {
        let names: Vec<&str> = PARAMETERS.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "commands:
  /help                     this list (also /?)
  /clear                    forget the conversation (the system message stays)
  /system TEXT              set the system message (no TEXT: remove it) and clear the conversation
  /set system TEXT          the same (ollama's spelling)
  /set parameter NAME VALUE sampling and length, as ollama names them: {}
  /set format json          replies are JSON objects (constrained decoding); /set noformat: free text
  /set verbose, /set quiet  statistics after each reply, or not
  /show info                the model: name, size, context, prompt format
  /show parameters          the values of those parameters
  /show template            the prompt the model reads, with the system message
  /show system              the system message
  /stats                    tokens, speed and KV cache use of the last reply (-v prints them after each)
  /save FILE                write the conversation as JSON (what `glmtool run --chat FILE` reads)
  /load FILE                replace the conversation with FILE's
  /exit                     quit (also /quit or Ctrl-D)
input:
  a line {BLOCK} starts a multi-line message, the next line {BLOCK} ends it
  a line ending in \\ continues on the next line
  what you type while a reply streams waits for the next prompt, then runs in order
  Ctrl-C stops a reply; at the prompt it discards the line
replies: at most {}, or the room left in the context",
            names.join(", "),
            self.length_text()
        );
    }

    fn command(
        &mut self,
        session: &mut Session<'a>,
        sampler: &mut Sampler,
        name: &str,
        arg: &str,
    ) -> Flow {
        match name {
            "/exit" | "/quit" => return Flow::Quit,
            "/help" | "/?" => self.help(),
            "/clear" => {
                self.turns.clear();
                eprintln!("(history cleared)");
            }
            "/system" => self.set_system(arg),
            "/set" => {
                let (what, rest) = split_word(arg);
                match what {
                    "system" => self.set_system(rest),
                    "parameter" => {
                        let (pname, value) = split_word(rest);
                        match self.set_parameter(session, sampler, pname, value) {
                            Ok(done) => eprintln!("({done})"),
                            Err(e) => eprintln!("error: {e:#}"),
                        }
                    }
                    "format" if rest == "json" => {
                        self.format = Some(Grammar::JsonObject);
                        eprintln!("(replies are JSON objects)");
                    }
                    "noformat" => {
                        self.format = None;
                        eprintln!("(replies are free text)");
                    }
                    "verbose" | "quiet" => {
                        self.verbose = what == "verbose";
                        eprintln!(
                            "(statistics after each reply: {})",
                            if self.verbose { "on" } else { "off" }
                        );
                    }
                    _ => eprintln!(
                        "usage: /set parameter NAME VALUE | /set system TEXT | /set format json | \
                         /set noformat | /set verbose | /set quiet (/help lists the parameters)"
                    ),
                }
            }
            "/show" => match arg {
                "info" => self.show_info(session),
                "parameters" => self.show_parameters(session, sampler),
                "template" => match self.template() {
                    Ok(t) => eprintln!("{t}"),
                    Err(e) => eprintln!("error: {e:#}"),
                },
                "system" => match self.base.iter().find(|m| m.role == Role::System) {
                    Some(m) if !m.content.is_empty() => eprintln!("{}", m.content),
                    _ => eprintln!("(no system message)"),
                },
                _ => eprintln!("usage: /show info | parameters | template | system"),
            },
            "/stats" => match &self.last {
                Some(s) => self.print_stats(s),
                None => eprintln!("(no reply yet)"),
            },
            "/save" | "/load" if arg.is_empty() => eprintln!("usage: {name} FILE"),
            "/save" => match self.save(Path::new(arg)) {
                Ok(n) => eprintln!("(saved {n} messages to {arg})"),
                Err(e) => eprintln!("error: {e:#}"),
            },
            "/load" => match self.load(Path::new(arg)) {
                Ok(n) => eprintln!("(loaded {n} messages from {arg})"),
                Err(e) => eprintln!("error: {e:#}"),
            },
            _ => eprintln!("unknown command {name}; /help lists the commands"),
        }
        Flow::Continue
    }

    /// `/system TEXT` and `/set system TEXT`.
    fn set_system(&mut self, text: &str) {
        if self.agent_mode() {
            eprintln!("(/system is not available with --tools or --interpreter)");
            return;
        }
        self.base.retain(|m| m.role != Role::System);
        if !text.is_empty() {
            self.base
                .insert(0, Message::new(Role::System, text.to_string()));
        }
        self.turns.clear();
        eprintln!(
            "(system message {}; history cleared)",
            if text.is_empty() { "removed" } else { "set" }
        );
    }

    /// `/set parameter NAME VALUE`: what was set, in words.
    fn set_parameter(
        &mut self,
        session: &mut Session<'a>,
        sampler: &mut Sampler,
        name: &str,
        value: &str,
    ) -> Result<String> {
        if name.is_empty() || value.is_empty() {
            bail!(
                "usage: /set parameter NAME VALUE, NAME one of: {}",
                PARAMETERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
            value
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}: {value:?} is not a valid value"))
        }
        let checked = |f: fn(&str) -> Result<f32, String>| {
            f(value).map_err(|e| anyhow::anyhow!("{name} {value}: {e}"))
        };
        let mut opts = sampler.options().clone();
        match name {
            "temperature" => opts.temperature = checked(crate::args::non_negative)?,
            "top_k" => opts.top_k = parse(name, value)?,
            "top_p" => opts.top_p = checked(crate::args::unit_interval)?,
            "repeat_penalty" => opts.repeat_penalty = checked(crate::args::positive)?,
            "repeat_last_n" => opts.repeat_last_n = parse(name, value)?,
            "seed" => {
                // a seed set again starts its stream again: the same replies as before
                opts.seed = parse(name, value)?;
                *sampler = Sampler::new(opts);
                return Ok(format!("{name} = {value}"));
            }
            "num_predict" => {
                self.length = ReplyLength::of(Some(parse(name, value)?), true, false);
                return Ok(format!("replies: at most {}", self.length_text()));
            }
            "num_ctx" => {
                let n: usize = parse(name, value)?;
                let train = self.model.hparams.n_ctx_train;
                if n == 0 || n > train {
                    bail!("num_ctx {n}: the context must be between 1 and the model's {train}");
                }
                let mut sopts = self.a.model.session_options(self.model)?;
                sopts.n_ctx = n;
                *session = Session::new(self.model, &sopts)?;
                return Ok(format!("context: {n} tokens"));
            }
            _ => bail!(
                "unknown parameter {name:?}; /set parameter takes {}",
                PARAMETERS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        sampler.set_options(opts);
        Ok(format!("{name} = {value}"))
    }

    fn show_parameters(&self, session: &Session, sampler: &Sampler) {
        let o = sampler.options();
        let num_predict = match self.length {
            ReplyLength::Tokens(n) => n.to_string(),
            ReplyLength::Unlimited => "-1".into(),
            ReplyLength::ChatDefault => DEFAULT_REPLY_TOKENS.to_string(),
            ReplyLength::Demo => super::DEMO_MAX_TOKENS.to_string(),
        };
        for (name, what) in PARAMETERS {
            let value = match *name {
                "temperature" => o.temperature.to_string(),
                "top_k" => o.top_k.to_string(),
                "top_p" => o.top_p.to_string(),
                "repeat_penalty" => o.repeat_penalty.to_string(),
                "repeat_last_n" => o.repeat_last_n.to_string(),
                "seed" => o.seed.to_string(),
                "num_ctx" => session.n_ctx().to_string(),
                _ => num_predict.clone(),
            };
            eprintln!("{name:<15} {value:<22} {what}");
        }
    }

    fn show_info(&self, session: &Session) {
        let m = self.model;
        let h = &m.hparams;
        let format = match m.tokenizer.chat_format() {
            ChatFormat::Chatglm3 => "ChatGLM3",
            ChatFormat::Glm4 => "GLM-4",
            ChatFormat::Chatglm2 => "ChatGLM2",
            ChatFormat::Completion => "completion (base or code model)",
        };
        let rows = [
            ("model", m.name.clone()),
            ("prompt format", format.to_string()),
            ("parameters", count(m.n_params)),
            ("file size", crate::progress::size(m.file_size)),
            (
                "context",
                format!("{} tokens (trained on {})", session.n_ctx(), h.n_ctx_train),
            ),
            (
                "layers",
                format!(
                    "{} (embedding {}, {} heads, {} KV groups, feed-forward {})",
                    h.n_layer, h.n_embd, h.n_head, h.n_head_kv, h.n_ff
                ),
            ),
            ("vocabulary", h.n_vocab.to_string()),
            (
                "placement",
                m.plan.describe().lines().next().unwrap_or("").to_string(),
            ),
        ];
        for (k, v) in rows {
            eprintln!("{k:<14} {v}");
        }
    }

    /// The prompt of a first turn as the model reads it (special tokens by name), with the
    /// system message in use or a `{system}` placeholder.
    fn template(&self) -> Result<String> {
        let mut messages = if self.base.is_empty() {
            vec![Message::system("{system}")]
        } else {
            self.base.clone()
        };
        messages.push(Message::user("{prompt}"));
        let ids = build_chat_ids(&self.model.tokenizer, &messages)?;
        Ok(self.model.tokenizer.decode(&ids)?)
    }

    fn save(&self, path: &Path) -> Result<usize> {
        let messages = self.messages();
        let mut json = serde_json::to_string_pretty(&messages)?;
        json.push('\n');
        std::fs::write(path, json)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(messages.len())
    }

    fn load(&mut self, path: &Path) -> Result<usize> {
        let messages = crate::cmd::tokenize::read_messages(&path.to_path_buf())?;
        build_chat_ids(&self.model.tokenizer, &messages)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let n = messages.len();
        let (base, turns) = split_conversation(messages);
        self.base = base;
        self.turns = turns;
        Ok(n)
    }

    fn print_stats(&self, s: &ReplyStats) {
        let g = &s.stats;
        let lines = [
            format!(
                "prompt: {} tokens ({} evaluated, {} from cache) in {:.2} ms, {:.2} tokens/s",
                g.prompt_tokens,
                g.prompt_evaluated,
                g.prompt_tokens - g.prompt_evaluated,
                g.prompt_seconds * 1e3,
                g.prompt_tps()
            ),
            format!(
                "reply: {} tokens in {:.2} ms, {:.2} tokens/s",
                g.generated_tokens,
                g.generate_seconds * 1e3,
                g.generate_tps()
            ),
            format!(
                "KV cache: {} / {} tokens ({:.0}%)",
                s.kv_used,
                s.n_ctx,
                100.0 * s.kv_used as f64 / s.n_ctx.max(1) as f64
            ),
        ];
        for l in lines {
            if self.stats_color {
                eprintln!("{STATS_COLOR}{l}{RESET}");
            } else {
                eprintln!("{l}");
            }
        }
    }

    /// One user message and its reply (with any tool rounds). Errors are reported; the chat
    /// goes on.
    fn turn(&mut self, session: &mut Session, sampler: &mut Sampler, text: &str, ask: &mut Ask) {
        let mut current = vec![Message::new(Role::User, text.to_string())];
        INTERRUPTED.store(false, Ordering::SeqCst);
        if let Err(e) = self.rounds(session, sampler, &mut current, ask) {
            eprintln!("error: {e:#}");
        }
        INTERRUPTED.store(false, Ordering::SeqCst);
        // A turn that never got a reply is not kept.
        if current.len() > 1 {
            self.turns.push(current);
        }
    }

    fn rounds(
        &mut self,
        session: &mut Session,
        sampler: &mut Sampler,
        current: &mut Vec<Message>,
        ask: &mut Ask,
    ) -> Result<()> {
        let a = self.a;
        let model = self.model;
        for _round in 0..MAX_AGENT_ROUNDS {
            let Some((messages, ids)) = self.fit_history(session, current)? else {
                return Ok(());
            };
            // keys typed from here to the end of the reply wait for the next prompt
            let reply_mode = crate::term::ReplyMode::enter();
            let spinner = RefCell::new(Spinner::start(format!(
                "reading the prompt ({} tokens)",
                ids.len()
            )));
            let progress = prompt_progress(&spinner, session.reusable_prefix(&ids));
            let room = session.n_ctx().saturating_sub(ids.len());
            let cap = self.length.cap(room);
            let mut dec = model.tokenizer.stream_decoder();
            let mut printer =
                ReplyPrinter::new(model.tokenizer.chat_format() == ChatFormat::Chatglm2);
            let length = match (&self.format, self.length) {
                // the grammar decides where a reply ends, not the demo's line rule
                (Some(_), ReplyLength::Demo) => ReplyLength::ChatDefault,
                (_, l) => l,
            };
            let cap = if length == self.length {
                cap
            } else {
                length.cap(room)
            };
            sampler.set_constraint(super::reply_constraint(
                model,
                self.format.as_ref(),
                Some(model.tokenizer.chat_format()),
                &messages,
                &self.stops,
                "format",
            )?);
            let mut shaper = Shaper::new(length);
            let mut out = std::io::stdout().lock();
            let g = generate_with_progress(
                session,
                &ids,
                cap,
                sampler,
                &self.stops,
                None,
                progress,
                |id, _| {
                    spinner.borrow_mut().stop();
                    let piece = dec.push(id);
                    let _ = out.write_all(shaper.feed(printer.feed(&piece)).as_bytes());
                    let _ = out.flush();
                    !INTERRUPTED.load(Ordering::Relaxed) && shaper.stop.is_none()
                },
            )?;
            spinner.borrow_mut().stop();
            if stopped_in_prompt(&g) {
                drop(out);
                eprintln!("(stopped)");
                return Ok(());
            }
            let _ = out.write_all(shaper.feed(printer.feed(&dec.finish())).as_bytes());
            let _ = out.write_all(shaper.feed(&printer.finish()).as_bytes());
            let _ = writeln!(out);
            let (call, history) = agent_reply(
                a,
                model.tokenizer.chat_format(),
                &messages,
                &model.tokenizer.decode(&g.ids)?,
            );
            if let Some(c) = &call {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"tool_call": {"name": c.name, "arguments": c.arguments}})
                );
            }
            let _ = out.flush();
            drop(out);
            current.extend_from_slice(&history[messages.len()..]);
            match (g.stop, self.length.limit()) {
                (StopReason::Length, Some(limit)) if limit <= room && g.ids.len() >= limit => {
                    match self.length {
                        ReplyLength::Tokens(_) => eprintln!("(reply cut at -n {cap} tokens)"),
                        ReplyLength::Demo => eprintln!(
                            "(reply cut at {cap} tokens, the demo model's default; -n N sets another)"
                        ),
                        _ => eprintln!(
                            "(reply cut at {cap} tokens, the chat's default; -n N sets another)"
                        ),
                    }
                }
                (StopReason::Length, _) => {
                    eprintln!(
                        "(reply cut: the context of {} tokens is full)",
                        session.n_ctx()
                    );
                }
                _ => {}
            }
            let stats = ReplyStats {
                stats: g.stats,
                kv_used: session.n_past(),
                n_ctx: session.n_ctx(),
            };
            if self.verbose {
                self.print_stats(&stats);
            }
            self.last = Some(stats);
            if g.stop == StopReason::Cancelled && shaper.stop.is_none() {
                eprintln!("(stopped)");
                return Ok(());
            }
            drop(reply_mode);
            match next_observation(a, call.is_some(), &history, ask)? {
                Some(obs) => current.push(obs),
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// The prompt for `base + turns + current`, dropping the oldest whole turns (never the
    /// system messages) until it leaves room for a reply; None (after saying why) when even the
    /// current turn alone does not fit.
    fn fit_history(
        &mut self,
        session: &Session,
        current: &[Message],
    ) -> Result<Option<(Vec<Message>, Vec<u32>)>> {
        let reserve = match self.length {
            ReplyLength::Tokens(n) => n,
            other => other
                .limit()
                .unwrap_or(DEFAULT_REPLY_TOKENS)
                .min(session.n_ctx() / 4),
        };
        let mut dropped = 0;
        let (messages, ids) = loop {
            let mut messages = self.messages();
            messages.extend_from_slice(current);
            let ids = build_chat_ids(&self.model.tokenizer, &messages)?;
            if ids.len() + reserve <= session.n_ctx() || self.turns.is_empty() {
                break (messages, ids);
            }
            self.turns.remove(0);
            dropped += 1;
        };
        if dropped > 0 {
            eprintln!(
                "(context full: dropped the {dropped} oldest turn{})",
                if dropped == 1 { "" } else { "s" }
            );
        }
        if ids.len() >= session.n_ctx() {
            eprintln!(
                "error: this turn is {} tokens; the context holds {} (use a larger -c)",
                ids.len(),
                session.n_ctx()
            );
            return Ok(None);
        }
        Ok(Some((messages, ids)))
    }
}

/// The first word of `s` and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    s.split_once(char::is_whitespace)
        .map_or((s, ""), |(w, rest)| (w, rest.trim()))
}

/// 1.16M, 6.24B.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// The engine's progress callback while a prompt is read (a batch at a time after the `cached`
/// prefix): Ctrl-C stops it within a batch, and the spinner's line shows the progress, with rate
/// and ETA.
pub(super) fn prompt_progress(
    spinner: &RefCell<Spinner>,
    cached: usize,
) -> impl FnMut(usize, usize) -> bool + '_ {
    let t0 = Instant::now();
    move |done, total| {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return false;
        }
        let (done, total) = (done.saturating_sub(cached), total.saturating_sub(cached));
        let rate = done as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        spinner.borrow().set_message(format!(
            "reading the prompt: {done}/{total} tokens, {rate:.0} tokens/s, ETA {:.0} s",
            total.saturating_sub(done) as f64 / rate.max(1e-9)
        ));
        true
    }
}

/// Whether a generation was stopped (Ctrl-C) while its prompt was read: cancelled before its
/// first token.
pub(super) fn stopped_in_prompt(g: &Generated) -> bool {
    g.stop == StopReason::Cancelled && g.ids.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(lines: &[&str]) -> Vec<(String, bool)> {
        let mut c = Collector::default();
        lines.iter().filter_map(|l| c.push(l)).collect()
    }

    #[test]
    fn multi_line_input() {
        assert_eq!(collect(&["hi"]), [("hi".to_string(), true)]);
        assert_eq!(
            collect(&["\"\"\"", "a", "/help", "", "\"\"\"", "b"]),
            [("a\n/help\n".to_string(), false), ("b".to_string(), true)]
        );
        assert_eq!(
            collect(&["one\\", "two \\", "three"]),
            [("one\ntwo \nthree".to_string(), false)]
        );
        // a """ after a continued line is text; a backslash inside a block is kept
        assert_eq!(
            collect(&["x\\", "\"\"\"", "\"\"\"", "y\\", "\"\"\""]),
            [("x\n\"\"\"".to_string(), false), ("y\\".to_string(), false)]
        );
        let mut c = Collector::default();
        assert!(c.push("\"\"\"").is_none() && c.pending());
    }

    #[test]
    fn commands_are_slash_words() {
        assert_eq!(command("/help"), Some(("/help", "")));
        assert_eq!(command(" /save  a b.json "), Some(("/save", "a b.json")));
        assert_eq!(command("/?"), Some(("/?", "")));
        assert_eq!(command("/frobnicate x"), Some(("/frobnicate", "x")));
        assert_eq!(command("/usr/bin is where?"), None);
        assert_eq!(command("/"), None);
        assert_eq!(command("hello /help"), None);
    }

    #[test]
    fn conversation_splits_into_system_and_turns() {
        let (base, turns) = split_conversation(vec![
            Message::system("s"),
            Message::user("u1"),
            Message::assistant("a1"),
            Message::user("u2"),
        ]);
        assert_eq!(base, [Message::system("s")]);
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0], [Message::user("u1"), Message::assistant("a1")]);
        let (base, turns) = split_conversation(vec![Message::assistant("a"), Message::user("u")]);
        assert!(base.is_empty());
        assert_eq!(turns.len(), 2);
    }
}
