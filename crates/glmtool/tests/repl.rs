//! `glmtool run`'s interactive chat driven through a pseudo-terminal on the bundled demo model:
//! the slash commands (ollama's /set and /show too), multi-line input, Ctrl-C at the prompt and
//! during a reply, input typed while a reply streams, /save and /load, /stats, the notice of a
//! reply cut by -n, `-i -p`, the input history and the spinner.
//!
//! To type "while a reply streams" without racing the model, a test stops the chat (SIGSTOP)
//! once the reply has begun, checks that the reply has not ended yet, types, and lets it go on
//! (SIGCONT).
#![cfg(unix)]

use expectrl::{Eof, Regex, Session, Signal, WaitStatus};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

mod common;

/// The demo model's cache, shared by the tests and prepared once.
fn cache() -> &'static Path {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| {
        let d = common::shared_dir("cache");
        let o = Command::new(env!("CARGO_BIN_EXE_glmtool"))
            .args(["run", "-p", "hi", "-n", "1", "-t", "1", "--json"])
            .env("GLMTOOL_CACHE", &d)
            .env("GLMTOOL_NO_HISTORY", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d
    })
}

struct Chat {
    p: Session,
    /// XDG_DATA_HOME of the chat.
    data: tempfile::TempDir,
    /// What came before the first prompt.
    start: String,
}

/// rustyline's prompt: after a carriage return and its escape sequences (a "> " inside a reply
/// follows "\r\n", never a bare "\r").
const PROMPT: &str = r"\r(\x1b\[[0-9;?]*[A-Za-z])*> ";

/// The chat with `args` after `run --temp 0 -t 1`, its first prompt seen. History is kept
/// (in a temporary XDG_DATA_HOME) only when `history` is true.
fn chat_with(args: &[&str], history: bool) -> Chat {
    chat_env(args, history, &[])
}

/// [`chat_with`], with these environment variables.
fn chat_env(args: &[&str], history: bool, env: &[(&str, &str)]) -> Chat {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glmtool"));
    cmd.args(["run", "--temp", "0", "-t", "1"])
        .args(args)
        .env("GLMTOOL_CACHE", cache())
        .env("XDG_DATA_HOME", data.path())
        .env("TERM", "xterm")
        .env_remove("GLMTOOL_MODEL")
        .env_remove("GLMTOOL_PROGRESS_DELAY_MS")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied());
    if history {
        cmd.env_remove("GLMTOOL_NO_HISTORY");
    } else {
        cmd.env("GLMTOOL_NO_HISTORY", "1");
    }
    let mut p = Session::spawn(cmd).unwrap();
    // as a real terminal starts: echo on (ptyprocess turns it off)
    p.get_process_mut()
        .set_echo(true, Some(Duration::from_secs(5)))
        .unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(15)));
    let mut c = Chat {
        p,
        data,
        start: String::new(),
    };
    c.start = c.prompt();
    c
}

fn chat(args: &[&str]) -> Chat {
    chat_with(args, false)
}

impl Chat {
    /// Waits for the next prompt; returns what came before it.
    fn prompt(&mut self) -> String {
        match self.p.expect(Regex(PROMPT)) {
            Ok(c) => String::from_utf8_lossy(c.before()).into_owned(),
            Err(e) => panic!("no prompt: {e}"),
        }
    }

    /// Sends a line and returns the output up to the next prompt.
    fn say(&mut self, line: &str) -> String {
        self.p.send_line(line).unwrap();
        self.prompt()
    }

    /// Sends the lines of one multi-line message, each after its continuation prompt, and
    /// returns the output up to the next "> " prompt.
    fn say_lines(&mut self, lines: &[&str]) -> String {
        let (last, init) = lines.split_last().unwrap();
        for l in init {
            self.p.send_line(l).unwrap();
            self.p.expect("... ").unwrap();
        }
        self.say(last)
    }

    /// /save to a file in the chat's temporary directory; the messages as JSON.
    fn save(&mut self, name: &str) -> (PathBuf, serde_json::Value) {
        let path = self.data.path().join(name);
        let out = self.say(&format!("/save {}", path.display()));
        assert!(out.contains("(saved "), "{out}");
        let text = std::fs::read_to_string(&path).unwrap();
        (path, serde_json::from_str(&text).unwrap())
    }

    /// Sends `line` as a message and stops the chat (SIGSTOP) once its reply has begun. Returns
    /// the reply's bytes so far, or None when the reply had already ended by then (the chat is
    /// then resumed and at its prompt again, for the caller to try again).
    fn pause_mid_reply(&mut self, line: &str) -> Option<Vec<u8>> {
        self.p.send(format!("{line}\r")).unwrap();
        // rustyline ends the line (bracketed paste off, newline); then the reply's first text
        // (anchored: a Regex consumes up to its last match in what has been read)
        self.p
            .expect(Regex(r"(?s-u)\A.*?\x1b\[\?2004l\r\n"))
            .unwrap();
        let so_far = self.p.expect(Regex(r"(?-u)\A\s*\S")).unwrap()[0].to_vec();
        self.p.get_process_mut().signal(Signal::SIGSTOP).unwrap();
        // what was written before the stop reaches the terminal
        std::thread::sleep(Duration::from_millis(100));
        let ended = self
            .p
            .is_matched(Regex(&format!(r"\(reply cut|\(stopped\)|{PROMPT}")))
            .unwrap();
        if ended {
            self.resume();
            self.prompt();
            return None;
        }
        Some(so_far)
    }

    /// Lets a chat stopped by [`Chat::pause_mid_reply`] go on.
    fn resume(&mut self) {
        self.p.get_process_mut().signal(Signal::SIGCONT).unwrap();
    }

    /// [`Chat::pause_mid_reply`] until it catches a reply (after /clear, the same reply again).
    fn pause_a_reply(&mut self, line: &str) -> Vec<u8> {
        for _ in 0..5 {
            if let Some(so_far) = self.pause_mid_reply(line) {
                return so_far;
            }
            self.say("/clear");
        }
        panic!("the reply always ended before the chat could be stopped in it");
    }

    /// /exit; the chat must end with status 0.
    fn exit(mut self) {
        self.p.send_line("/exit").unwrap();
        self.p.expect(Eof).unwrap();
        let status = self.p.get_process().wait().unwrap();
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "exit status {status:?}"
        );
    }
}

fn roles_and_contents(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn help_lists_the_commands_and_unknown_commands_are_answered() {
    let mut c = chat(&[]);
    let help = c.say("/help");
    for cmd in [
        "/help", "/clear", "/system", "/stats", "/save", "/load", "/exit",
    ] {
        assert!(help.contains(cmd), "/help lacks {cmd}: {help}");
    }
    for cmd in [
        "/set parameter",
        "/set system",
        "/show info",
        "/show template",
    ] {
        assert!(help.contains(cmd), "/help lacks {cmd}: {help}");
    }
    for name in [
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "num_ctx",
        "repeat_penalty",
    ] {
        assert!(help.contains(name), "/help lacks {name}: {help}");
    }
    // the default reply length of the demo model (no -n)
    assert!(
        help.contains("96 tokens, ending at a blank line or at the end of a line after 32"),
        "{help}"
    );
    let out = c.say("/frobnicate now");
    assert!(
        out.contains("unknown command /frobnicate; /help lists the commands"),
        "{out}"
    );
    assert!(!out.contains("(reply cut"), "{out}");
    // nothing went to the model
    let (_, v) = c.save("empty.json");
    assert_eq!(v, serde_json::json!([]));
    c.exit();
}

#[test]
fn multi_line_block_and_backslash_continuation_are_one_message_each() {
    let mut c = chat(&["-n", "8"]);
    let out = c.say_lines(&["\"\"\"", "line one", "line two", "\"\"\""]);
    assert_eq!(
        out.matches("(reply cut at -n 8 tokens)").count(),
        1,
        "{out}"
    );
    let out = c.say_lines(&["one\\", "two"]);
    assert_eq!(
        out.matches("(reply cut at -n 8 tokens)").count(),
        1,
        "{out}"
    );
    let (_, v) = c.save("multi.json");
    let m = roles_and_contents(&v);
    let roles: Vec<&str> = m.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"], "{v}");
    assert_eq!(m[0].1, "line one\nline two");
    assert_eq!(m[2].1, "one\ntwo");
    c.exit();
}

#[test]
fn ctrl_c_at_the_prompt_says_how_to_leave_and_the_chat_goes_on() {
    let mut c = chat(&["-n", "8"]);
    c.p.send([3u8]).unwrap(); // Ctrl-C
    let out = c.prompt();
    assert!(out.contains("(Ctrl-D or /exit quits)"), "{out}");
    let out = c.say("Tell me a fortune");
    assert!(out.contains("(reply cut at -n 8 tokens)"), "{out}");
    // Ctrl-D quits
    c.p.send([4u8]).unwrap();
    c.p.expect(Eof).unwrap();
    let status = c.p.get_process().wait().unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

#[test]
fn save_then_load_round_trips_the_conversation() {
    let mut c = chat(&["-n", "8"]);
    c.say("Tell me a fortune");
    let (a_path, a) = c.save("a.json");
    let m = roles_and_contents(&a);
    assert_eq!(m.len(), 2, "{a}");
    assert_eq!(m[0], ("user".into(), "Tell me a fortune".into()));
    assert_eq!(m[1].0, "assistant");
    // /save writes what `run --chat` reads
    let out = c.say("/clear");
    assert!(out.contains("(history cleared)"), "{out}");
    assert_eq!(c.save("cleared.json").1, serde_json::json!([]));
    let out = c.say(&format!("/load {}", a_path.display()));
    assert!(out.contains("(loaded 2 messages"), "{out}");
    assert_eq!(c.save("b.json").1, a);
    // a bad file is one line of error, and the conversation stays
    let missing = c.data.path().join("missing.json");
    let out = c.say(&format!("/load {}", missing.display()));
    assert!(out.contains("error: reading"), "{out}");
    assert_eq!(c.save("c.json").1, a);
    let out = c.say("/load");
    assert!(out.contains("usage: /load FILE"), "{out}");
    // the next turn continues the loaded conversation
    c.say("And another");
    assert_eq!(roles_and_contents(&c.save("d.json").1).len(), 4);
    c.exit();
}

#[test]
fn stats_on_demand_and_with_verbose() {
    let mut c = chat(&["-n", "8"]);
    let out = c.say("/stats");
    assert!(out.contains("(no reply yet)"), "{out}");
    let out = c.say("Tell me a fortune");
    assert!(out.contains("(reply cut at -n 8 tokens)"), "{out}");
    assert!(!out.contains("KV cache"), "stats without -v: {out}");
    let out = c.say("/stats");
    let prompt_tokens = number_after(&out, "prompt: ");
    assert!(prompt_tokens > 5, "{out}");
    assert!(
        out.contains(&format!(
            "prompt: {prompt_tokens} tokens ({prompt_tokens} evaluated, 0 from cache)"
        )),
        "{out}"
    );
    assert_eq!(number_after(&out, "reply: "), 8, "{out}");
    assert!(out.contains("tokens/s"), "{out}");
    assert!(out.contains(" / 512 tokens"), "{out}");
    let kv = number_after(&out, "KV cache: ");
    assert!(kv >= prompt_tokens && kv <= prompt_tokens + 8, "{out}");
    c.exit();

    let mut c = chat(&["-n", "8", "-v"]);
    let out = c.say("Tell me a fortune");
    assert!(out.contains("reply: 8 tokens"), "{out}");
    assert!(out.contains("KV cache: "), "{out}");
    c.exit();
}

/// The number right after the first `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> usize {
    let i = text
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} not in {text:?}"));
    let rest = &text[i + prefix.len()..];
    let n = rest.chars().take_while(char::is_ascii_digit).count();
    rest[..n]
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in {text:?}"))
}

#[test]
fn prompt_is_the_first_turn_with_i() {
    let mut c = chat(&["-n", "8", "-i", "-p", "Tell me a fortune"]);
    let (_, v) = c.save("first.json");
    let m = roles_and_contents(&v);
    assert_eq!(m.len(), 2, "{v}");
    assert_eq!(m[0], ("user".into(), "Tell me a fortune".into()));
    c.exit();
}

#[test]
fn history_is_kept_in_the_xdg_data_dir_unless_disabled() {
    let mut c = chat_with(&[], true);
    c.say("/help");
    c.say("/stats");
    let file = c.data.path().join("glmtool").join("history.txt");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("/help\n/stats\n"), "{text}");
    c.exit();

    let mut c = chat(&[]);
    c.say("/help");
    assert!(!c.data.path().join("glmtool").exists());
    c.exit();
}

/// The demo model's GGUF in the test cache (as another model: GLMTOOL_MODEL names it).
fn demo_gguf() -> PathBuf {
    std::fs::read_dir(cache())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        .expect("the demo model's cache entry")
}

#[test]
fn the_chat_default_reply_length_is_1024_tokens_on_other_models() {
    let gguf = demo_gguf();
    let mut c = chat_env(&[], false, &[("GLMTOOL_MODEL", gguf.to_str().unwrap())]);
    let help = c.say("/help");
    assert!(help.contains("1024 tokens (the chat's default"), "{help}");
    c.exit();
}

/// Bytes as text, with the terminal's carriage returns and escape sequences removed.
fn screen(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).replace('\r', "");
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn lines_typed_while_a_reply_streams_run_after_it_in_order() {
    let mut c = chat(&["-n", "300"]);
    c.pause_a_reply("Tell me a fortune");
    // two commands typed in one go while the reply streams
    c.p.send("/stats\r/exit\r").unwrap();
    c.resume();
    let rest = c.p.expect("(reply cut at -n 300 tokens)").unwrap();
    let reply = screen(rest.before());
    assert!(
        !reply.contains("/stats") && !reply.contains("/exit"),
        "typed text echoed into the reply: {reply:?}"
    );
    // /stats runs first (a reply of 300 tokens), then /exit ends the chat
    let stats = c.p.expect(Regex(r"reply: \d+ tokens")).unwrap();
    assert!(screen(stats.before()).contains("/stats"));
    assert_eq!(&stats[0], b"reply: 300 tokens");
    c.p.expect(Eof).unwrap();
    let status = c.p.get_process().wait().unwrap();
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "exit status {status:?}"
    );
}

#[test]
fn a_multi_line_block_typed_at_once_arrives_whole() {
    let mut c = chat(&["-n", "4"]);
    // the block's lines arrive together, as from a fast typist or a paste without bracketed
    // paste: every one counts, not just the first
    c.p.send("\"\"\"\rline one\rline two\r\"\"\"\r").unwrap();
    let out = c.prompt();
    assert!(out.contains("(reply cut at -n 4 tokens)"), "{out}");
    let (_, v) = c.save("block.json");
    let m = roles_and_contents(&v);
    assert_eq!(m.len(), 2, "{v}");
    assert_eq!(m[0], ("user".into(), "line one\nline two".into()));
    c.exit();
}

#[test]
fn ctrl_c_during_a_reply_stops_it_and_the_screen_keeps_the_saved_text() {
    let mut c = chat(&["-n", "300"]);
    let so_far = c.pause_a_reply("Tell me a fortune");
    c.p.send([3u8]).unwrap(); // Ctrl-C
    c.resume();
    let rest = c.p.expect("(stopped)").unwrap();
    let mut shown = so_far;
    shown.extend_from_slice(rest.before());
    let shown = screen(&shown);
    assert!(!shown.contains("^C"), "{shown:?}");
    c.prompt();
    let (_, v) = c.save("stopped.json");
    let m = roles_and_contents(&v);
    assert_eq!(m.len(), 2, "{v}");
    // the reply as printed (its leading whitespace dropped) is the reply as saved
    assert_eq!(shown.trim(), m[1].1.trim(), "screen vs saved");
    // the chat is stopped once the reply's first visible character is out, so the saved reply
    // may be as short as that one character (a random model may also put a first line in the
    // metadata): it must not be empty
    assert!(!m[1].1.trim().is_empty(), "{v}");
    // and the chat goes on
    let out = c.say("/stats");
    let n = number_after(&out, "reply: ");
    assert!(n > 0 && n < 300, "{out}");
    c.exit();
}

#[test]
fn set_parameter_and_show_like_ollama() {
    let mut c = chat(&["-n", "8"]);
    let p = c.say("/show parameters");
    assert!(p.contains("temperature     0 "), "{p}");
    assert!(p.contains("num_ctx         512 "), "{p}");
    assert!(p.contains("num_predict     8 "), "{p}");
    // the greedy reply, for comparison
    c.say("Tell me a fortune");
    let greedy = c.save("greedy.json").1[1].clone();
    c.say("/clear");
    for (line, said) in [
        ("/set parameter temperature 1.5", "(temperature = 1.5)"),
        ("/set parameter top_p 1", "(top_p = 1)"),
        ("/set parameter top_k 50", "(top_k = 50)"),
        (
            "/set parameter repeat_penalty 1.1",
            "(repeat_penalty = 1.1)",
        ),
        ("/set parameter seed 7", "(seed = 7)"),
        ("/set parameter num_ctx 256", "(context: 256 tokens)"),
        (
            "/set parameter num_predict 5",
            "(replies: at most 5 tokens (-n))",
        ),
    ] {
        let out = c.say(line);
        assert!(out.contains(said), "{line}: {out}");
    }
    let p = c.say("/show parameters");
    for want in [
        "temperature     1.5 ",
        "top_k           50 ",
        "top_p           1 ",
        "repeat_penalty  1.1 ",
        "seed            7 ",
        "num_ctx         256 ",
        "num_predict     5 ",
    ] {
        assert!(p.contains(want), "{want:?} not in {p}");
    }
    // the new values are used: a 5-token reply in a 256-token context, sampled
    let out = c.say("Tell me a fortune");
    assert!(out.contains("(reply cut at -n 5 tokens)"), "{out}");
    let stats = c.say("/stats");
    assert!(stats.contains(" / 256 tokens"), "{stats}");
    let sampled = c.save("sampled.json").1[1].clone();
    // setting the seed again gives the same reply again
    c.say("/clear");
    c.say("/set parameter seed 7");
    c.say("Tell me a fortune");
    let again = c.save("again.json").1[1].clone();
    assert_eq!(sampled, again);
    assert_ne!(greedy, sampled);
    // bad values are one line each, and change nothing
    for (line, said) in [
        (
            "/set parameter temperature -1",
            "error: temperature -1: must be >= 0",
        ),
        (
            "/set parameter top_p 7",
            "error: top_p 7: must be between 0 and 1",
        ),
        (
            "/set parameter num_ctx 100000",
            "error: num_ctx 100000: the context must be between 1 and the model's 512",
        ),
        (
            "/set parameter seed x",
            "error: seed: \"x\" is not a valid value",
        ),
        (
            "/set parameter bogus 1",
            "error: unknown parameter \"bogus\"",
        ),
        ("/set parameter", "usage: /set parameter NAME VALUE"),
        ("/set nothing", "usage: /set parameter NAME VALUE"),
        (
            "/show",
            "usage: /show info | parameters | template | system",
        ),
    ] {
        let out = c.say(line);
        assert!(out.contains(said), "{line}: {out}");
    }
    assert!(c.say("/show parameters").contains("temperature     1.5 "));
    // /show info: the model
    let info = c.say("/show info");
    for want in [
        "tiny-chatglm3",
        "ChatGLM3",
        "1.16M",
        "256 tokens (trained on 512)",
    ] {
        assert!(info.contains(want), "{want:?} not in {info}");
    }
    // /set system is /system; /show template renders the prompt with it
    assert!(c.say("/show system").contains("(no system message)"));
    let t = c.say("/show template").replace('\r', "");
    assert!(
        t.contains("[gMASK]sop<|system|>\n {system}<|user|>\n {prompt}<|assistant|>"),
        "{t:?}"
    );
    let out = c.say("/set system Answer in one line.");
    assert!(
        out.contains("(system message set; history cleared)"),
        "{out}"
    );
    assert!(c.say("/show system").contains("Answer in one line."));
    let t = c.say("/show template").replace('\r', "");
    assert!(
        t.contains("<|system|>\n Answer in one line.<|user|>\n {prompt}<|assistant|>"),
        "{t:?}"
    );
    c.say("Tell me a fortune");
    let m = roles_and_contents(&c.save("system.json").1);
    assert_eq!(m[0], ("system".into(), "Answer in one line.".into()));
    // /set verbose prints the statistics after each reply, /set quiet stops it
    c.say("/set verbose");
    assert!(c.say("Another").contains("KV cache: "));
    c.say("/set quiet");
    assert!(!c.say("Another").contains("KV cache: "));
    c.exit();
}

#[test]
fn a_spinner_shows_while_the_model_loads_and_the_prompt_is_read() {
    // no delay: every spinner draws at once (by default only what takes 300 ms does)
    let mut c = chat_env(&["-n", "2"], false, &[("GLMTOOL_PROGRESS_DELAY_MS", "0")]);
    assert!(c.start.contains("loading tiny-chatglm3"), "{:?}", c.start);
    let out = c.say("Tell me a fortune");
    assert!(out.contains("reading the prompt ("), "{out:?}");
    // erased before the reply
    let i = out.find("reading the prompt (").unwrap();
    assert!(out[i..].contains("\r\x1b[2K"), "{out:?}");
    c.exit();

    let mut c = chat(&["-n", "2"]);
    let out = c.say("Tell me a fortune");
    assert!(!out.contains("reading the prompt"), "{out:?}");
    c.exit();
}

#[test]
fn set_format_json_and_a_json_schema_constrain_the_replies() {
    let schema = r#"{"type": "object", "properties": {"mood": {"enum": ["calm", "glad"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["mood", "n"], "additionalProperties": false}"#;
    let mut c = chat(&["-j", schema]);
    c.say("How do you feel?");
    let out = c.say("/set noformat");
    assert!(out.contains("(replies are free text)"), "{out}");
    let out = c.say("/set format json");
    assert!(out.contains("(replies are JSON objects)"), "{out}");
    c.say("And now?");
    let (_, v) = c.save("json.json");
    let m = roles_and_contents(&v);
    assert_eq!(m.len(), 4, "{v}");
    let first: serde_json::Value =
        serde_json::from_str(&m[1].1).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert!(
        matches!(first["mood"].as_str(), Some("calm" | "glad")),
        "{first}"
    );
    assert!((0..=9).contains(&first["n"].as_i64().unwrap()), "{first}");
    // greedy decoding may cut an open-ended object at the reply limit; it starts as one
    assert!(m[3].1.starts_with('{'), "{v}");
    c.exit();
}
