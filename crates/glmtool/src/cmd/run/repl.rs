//! `glmtool run`'s interactive chat on a terminal: slash commands, multi-line input, a persistent
//! input history, statistics, saving and loading the conversation.

use super::{agent_reply, base_messages, next_observation, Args, ReplyPrinter, MAX_AGENT_ROUNDS};
use crate::INTERRUPTED;
use anyhow::Result;
use glm_runtime::chat::{build_chat_ids, stop_ids, Message, Role};
use glm_runtime::generate::{generate, GenerateStats, StopReason};
use glm_runtime::sampler::Sampler;
use glm_runtime::tokenizer::ChatFormat;
use glm_runtime::{Model, Session};
use rustyline::error::ReadlineError;
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
pub fn interactive(
    a: &Args,
    model: &Model,
    session: &mut Session,
    sampler: &mut Sampler,
    first: Option<&str>,
) -> Result<()> {
    let config = rustyline::Config::builder()
        .max_history_size(1000)?
        .auto_add_history(false)
        .build();
    let mut rl = rustyline::DefaultEditor::with_config(config)?;
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
        chat.turn(session, sampler, text);
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
                if chat.command(name, arg) == Flow::Quit {
                    break;
                }
                continue;
            }
        }
        chat.turn(session, sampler, &text);
    }
    Ok(())
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
/// on; messages before the first one make a turn of their own).
fn split_conversation(messages: Vec<Message>) -> (Vec<Message>, Vec<Vec<Message>>) {
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
}

impl Chat<'_> {
    fn agent_mode(&self) -> bool {
        self.base.iter().any(|m| m.tools.is_some()) || self.a.interpreter
    }

    fn messages(&self) -> Vec<Message> {
        let mut m = self.base.clone();
        m.extend(self.turns.iter().flatten().cloned());
        m
    }

    /// The most new tokens of a reply: `-n`, or the chat's default.
    fn reply_cap(&self) -> usize {
        if self.a.n_predict < 0 {
            DEFAULT_REPLY_TOKENS
        } else {
            self.a.n_predict as usize
        }
    }

    fn help(&self) {
        let cap = if self.a.n_predict < 0 {
            format!("{DEFAULT_REPLY_TOKENS} tokens (the chat's default; -n N sets another)")
        } else {
            format!("{} tokens (-n)", self.a.n_predict)
        };
        eprintln!(
            "commands:
  /help          this list (also /?)
  /clear         forget the conversation (the system message stays)
  /system TEXT   set the system message (no TEXT: remove it) and clear the conversation
  /stats         tokens, speed and KV cache use of the last reply (-v prints them after each)
  /save FILE     write the conversation as JSON (what `glmtool run --chat FILE` reads)
  /load FILE     replace the conversation with FILE's
  /exit          quit (also /quit or Ctrl-D)
input:
  a line {BLOCK} starts a multi-line message, the next line {BLOCK} ends it
  a line ending in \\ continues on the next line
  Ctrl-C stops a reply; at the prompt it discards the line
replies: at most {cap}, or the room left in the context"
        );
    }

    fn command(&mut self, name: &str, arg: &str) -> Flow {
        match name {
            "/exit" | "/quit" => return Flow::Quit,
            "/help" | "/?" => self.help(),
            "/clear" => {
                self.turns.clear();
                eprintln!("(history cleared)");
            }
            "/system" if self.agent_mode() => {
                eprintln!("(/system is not available with --tools or --interpreter)");
            }
            "/system" => {
                self.base.retain(|m| m.role != Role::System);
                if !arg.is_empty() {
                    self.base
                        .insert(0, Message::new(Role::System, arg.to_string()));
                }
                self.turns.clear();
                eprintln!(
                    "(system message {}; history cleared)",
                    if arg.is_empty() { "removed" } else { "set" }
                );
            }
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
    fn turn(&mut self, session: &mut Session, sampler: &mut Sampler, text: &str) {
        let mut current = vec![Message::new(Role::User, text.to_string())];
        INTERRUPTED.store(false, Ordering::SeqCst);
        if let Err(e) = self.rounds(session, sampler, &mut current) {
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
    ) -> Result<()> {
        let a = self.a;
        let model = self.model;
        for _round in 0..MAX_AGENT_ROUNDS {
            let Some((messages, ids)) = self.fit_history(session, current)? else {
                return Ok(());
            };
            let Some((pre_tokens, pre_seconds)) =
                eval_prompt_interruptible(session, &ids, a.model.shape.batch.max(1))?
            else {
                // after the "^C" the terminal echoed on the input line
                eprintln!("\n(stopped)");
                return Ok(());
            };
            let room = session.n_ctx().saturating_sub(ids.len());
            let cap = self.reply_cap();
            let mut dec = model.tokenizer.stream_decoder();
            let mut printer =
                ReplyPrinter::new(model.tokenizer.chat_format() == ChatFormat::Chatglm2);
            let mut out = std::io::stdout().lock();
            let mut g = generate(session, &ids, cap.min(room), sampler, &self.stops, |id| {
                let piece = dec.push(id);
                let _ = out.write_all(printer.feed(&piece).as_bytes());
                let _ = out.flush();
                !INTERRUPTED.load(Ordering::Relaxed)
            })?;
            let _ = out.write_all(printer.feed(&dec.finish()).as_bytes());
            let _ = out.write_all(printer.finish().as_bytes());
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
            g.stats.prompt_evaluated += pre_tokens;
            g.stats.prompt_seconds += pre_seconds;
            current.extend_from_slice(&history[messages.len()..]);
            match g.stop {
                StopReason::Length if cap <= room && g.ids.len() >= cap => {
                    if a.n_predict < 0 {
                        eprintln!(
                            "(reply cut at {cap} tokens, the chat's default; -n N sets another)"
                        );
                    } else {
                        eprintln!("(reply cut at -n {cap} tokens)");
                    }
                }
                StopReason::Length => {
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
            if a.verbose {
                self.print_stats(&stats);
            }
            self.last = Some(stats);
            if g.stop == StopReason::Cancelled {
                eprintln!("(stopped)");
                return Ok(());
            }
            match next_observation(a, call.is_some(), &history)? {
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
        let reserve = if self.a.n_predict < 0 {
            DEFAULT_REPLY_TOKENS.min(session.n_ctx() / 4)
        } else {
            self.a.n_predict as usize
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

/// Evaluates all of `ids` but its last batch (which `generate` then evaluates) one batch at a
/// time after the cached prefix, checking Ctrl-C between batches: a long prompt stops within a
/// batch. A prompt that takes more than 2 s gets a progress bar with rate and ETA (on a
/// terminal). Returns the tokens evaluated and the seconds taken, or None when interrupted.
pub(super) fn eval_prompt_interruptible(
    session: &mut Session,
    ids: &[u32],
    n_batch: usize,
) -> Result<Option<(usize, f64)>> {
    let t0 = Instant::now();
    if ids.len() >= session.n_ctx() {
        // too long: `generate` says so
        return Ok(Some((0, 0.0)));
    }
    let common = session.reusable_prefix(ids);
    session.truncate(common);
    let mut pos = common;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let result = loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break None;
        }
        if ids.len() - pos <= n_batch {
            break Some((pos - common, t0.elapsed().as_secs_f64()));
        }
        session.eval(&ids[pos..pos + n_batch], false)?;
        pos += n_batch;
        if bar.is_none() && t0.elapsed().as_secs_f64() > 2.0 {
            let b = crate::progress::bar(
                (ids.len() - common) as u64,
                false,
                "prompt [{elapsed_precise}] {wide_bar} {pos}/{len} tokens {per_sec} ETA {eta}",
            );
            b.set_position((pos - common) as u64);
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position((pos - common) as u64);
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(result)
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
