//! `glmtool run`'s interactive chat driven through a pseudo-terminal on the bundled demo model:
//! the slash commands, multi-line input, Ctrl-C at the prompt, /save and /load, /stats, the
//! notice of a reply cut by -n, `-i -p` and the input history.
#![cfg(unix)]

use expectrl::{Eof, Regex, Session, WaitStatus};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The demo model's cache, shared by the tests and prepared once.
fn cache() -> &'static Path {
    static C: OnceLock<tempfile::TempDir> = OnceLock::new();
    C.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_glmtool"))
            .args(["run", "-p", "hi", "-n", "1", "-t", "1", "--json"])
            .env("GLMTOOL_CACHE", d.path())
            .env("GLMTOOL_NO_HISTORY", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d
    })
    .path()
}

struct Chat {
    p: Session,
    /// XDG_DATA_HOME of the chat.
    data: tempfile::TempDir,
}

/// rustyline's prompt: after a carriage return and its escape sequences (a "> " inside a reply
/// follows "\r\n", never a bare "\r").
const PROMPT: &str = r"\r(\x1b\[[0-9;?]*[A-Za-z])*> ";

/// The chat with `args` after `run --temp 0 -t 1`, its first prompt seen. History is kept
/// (in a temporary XDG_DATA_HOME) only when `history` is true.
fn chat_with(args: &[&str], history: bool) -> Chat {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glmtool"));
    cmd.args(["run", "--temp", "0", "-t", "1"])
        .args(args)
        .env("GLMTOOL_CACHE", cache())
        .env("XDG_DATA_HOME", data.path())
        .env("TERM", "xterm")
        .env_remove("NO_COLOR");
    if history {
        cmd.env_remove("GLMTOOL_NO_HISTORY");
    } else {
        cmd.env("GLMTOOL_NO_HISTORY", "1");
    }
    let mut p = Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(15)));
    let mut c = Chat { p, data };
    c.prompt();
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
    // the default reply length of the chat (no -n)
    assert!(help.contains("1024 tokens"), "{help}");
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
