//! llama.cpp's flags on glmtool's command line. llama.cpp spells many flags with one dash and
//! several letters (`-ngl 99`, `-fa`, `-ctk q8_0`); clap would read `-fa` as `-f a` and
//! misreport it. Before clap sees the arguments, every flag of [`FLAGS`] is either rewritten to
//! glmtool's spelling of the same thing or refused with one line saying what glmtool offers
//! instead — never misparsed. README's table "llama.cpp flags" lists the same rows.

use std::ffi::OsString;

/// What glmtool does with one llama.cpp flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compat {
    /// The same meaning under glmtool's name.
    Rename(&'static str),
    /// Accepted and ignored: glmtool already behaves as the flag asks (the reason).
    Noop(&'static str),
    /// Not in glmtool (yet): llama.cpp's meaning, then what to do instead.
    Missing(&'static str, &'static str),
}

use Compat::{Missing, Noop, Rename};

/// llama.cpp flags (llama-cli, llama-server, llama-bench, llama-perplexity, llama-quantize)
/// that are not already glmtool's own: spellings, then what glmtool does with them. Flags that
/// glmtool declares itself with llama.cpp's meaning (`-m -t -c -b -n -p -f -i -s -r -e -o
/// --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n --frequency-penalty
/// --presence-penalty -l --logit-bias -j --json-schema --json-schema-file --grammar --grammar-file --host --port
/// --api-key --alias --flash-attn --cache-type-k --cache-type-v --parallel --metrics
/// --chunks --kl-divergence[-base] --pure --imatrix --include-weights --exclude-weights
/// --process-output --in-file --no-ppl --output-frequency --allow-requantize --output-tensor-type
/// --token-embedding-type`) are not listed.
pub const FLAGS: &[(&[&str], Compat)] = &[
    (&["-ngl", "--n-gpu-layers"], Rename("--gpu-layers")),
    (&["-sys", "--system-prompt"], Rename("--system")),
    (&["-cnv"], Rename("--conversation")),
    (&["-co"], Rename("--color")),
    (&["-dev"], Rename("--device")),
    (&["-ctk"], Rename("--cache-type-k")),
    (&["-ctv"], Rename("--cache-type-v")),
    // `-fa on|off|auto`, or a bare `-fa` (older llama.cpp): --flash-attn takes an optional value
    (&["-fa"], Rename("--flash-attn")),
    (
        &["--no-mmap"],
        Noop(
            "glmtool copies the weights into its own buffers at load; the file is not kept mapped",
        ),
    ),
    (&["-np"], Rename("--parallel")),
    (
        &["-cb", "--cont-batching", "-nocb", "--no-cont-batching"],
        Noop("`serve` always batches its slots continuously (-np sets how many)"),
    ),
    (
        &["-ub", "--ubatch-size"],
        Missing(
            "llama.cpp's physical batch size",
            "-b/--batch-size is glmtool's one batch size",
        ),
    ),
    (
        &["-tb", "--threads-batch"],
        Missing(
            "a separate thread count for prompts",
            "-t sets the threads for both",
        ),
    ),
    (
        &["-mg", "--main-gpu"],
        Missing(
            "llama.cpp's main GPU index",
            "choose the GPU with --device cuda:N",
        ),
    ),
    (
        &["-ts", "--tensor-split"],
        Missing(
            "splitting a model over several GPUs",
            "glmtool uses one GPU (--device) plus the CPU (--gpu-layers)",
        ),
    ),
    (
        &["-sm", "--split-mode"],
        Missing(
            "splitting a model over several GPUs",
            "glmtool uses one GPU (--device) plus the CPU (--gpu-layers)",
        ),
    ),
    (
        &["-nkvo", "--no-kv-offload", "-kvo", "--kv-offload"],
        Missing(
            "keeping the KV cache on the CPU while layers run on the GPU",
            "each layer's cache lives where the layer runs (--gpu-layers)",
        ),
    ),
    (
        &["-mli", "--multiline-input"],
        Missing(
            "llama-cli's multi-line input mode",
            "in glmtool's chat, \"\"\" opens and closes a multi-line message",
        ),
    ),
    (
        &["-ins", "--instruct"],
        Missing(
            "the old instruct mode (removed from llama.cpp too)",
            "`run -i` chats in the model's own prompt format",
        ),
    ),
    (
        &["-if", "--interactive-first"],
        Missing(
            "llama-cli's wait-for-input-first mode",
            "`run` without -p on a terminal starts the chat with your input",
        ),
    ),
    (
        &["-ptc", "--print-token-count"],
        Missing(
            "printing the token count every N tokens",
            "the statistics line after each reply has the counts; --json has them all",
        ),
    ),
    (
        &["-ps", "--p-split"],
        Missing(
            "speculative decoding's split probability",
            "glmtool has no speculative decoding",
        ),
    ),
    (
        &["-lm", "--load-mode", "--mlock"],
        Missing(
            "llama.cpp's model loading modes (mmap, mlock, direct I/O)",
            "glmtool copies the weights into its own buffers at load",
        ),
    ),
    (
        &["--log-file"],
        Missing(
            "writing llama.cpp's log to a file",
            "redirect standard error: `glmtool run … 2> FILE`",
        ),
    ),
    (
        &["-ot", "--override-tensor"],
        Missing(
            "placing chosen tensors on chosen devices",
            "--gpu-layers places whole layers",
        ),
    ),
    (&["-jf"], Rename("--json-schema-file")),
    (
        &["-sp", "--special"],
        Missing(
            "printing special tokens",
            "`run --json` gives the ids; `tokenize` shows every token",
        ),
    ),
    (
        &[
            "--typical",
            "--mirostat",
            "--dry-multiplier",
            "--xtc-probability",
        ],
        Missing(
            "a sampler glmtool lacks",
            "glmtool samples with --temp, --top-k, --top-p, --min-p, --repeat-penalty, \
             --frequency-penalty and --presence-penalty",
        ),
    ),
    (
        &[
            "--leave-output-tensor",
            "--tensor-type",
            "--keep-split",
            "--override-kv",
            "--prune-layers",
        ],
        Missing(
            "a llama-quantize option glmtool lacks",
            "glmtool quantize takes --pure, --imatrix, --include-weights, --exclude-weights, \
             --output-tensor-type, --token-embedding-type and --dry-run",
        ),
    ),
    (
        &[
            "--chunk",
            "--save-frequency",
            "--output-format",
            "--show-statistics",
            "--parse-special",
        ],
        Missing(
            "a llama-imatrix option glmtool lacks",
            "glmtool imatrix takes -c, -b, --chunks, --process-output, --in-file, --no-ppl and \
             --output-frequency, and writes the GGUF format",
        ),
    ),
];

/// The row of `flag` (`-fa`, or `--flash-attn=on`'s flag part).
pub fn lookup(flag: &str) -> Option<Compat> {
    let name = flag.split_once('=').map_or(flag, |(n, _)| n);
    FLAGS
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, c)| *c)
}

/// Rewrites llama.cpp's spellings to glmtool's; an error line for a flag glmtool lacks.
pub fn rewrite(args: impl IntoIterator<Item = OsString>) -> Result<Vec<OsString>, String> {
    let mut out: Vec<OsString> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else {
            out.push(a);
            continue;
        };
        if s == "--" {
            out.push(a);
            out.extend(it);
            break;
        }
        let (flag, inline_value) = match s.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (s, None),
        };
        match lookup(flag) {
            None => out.push(a),
            Some(Noop(_)) => {}
            Some(Missing(meaning, instead)) => {
                return Err(format!("glmtool has no {flag} ({meaning}) yet: {instead}"));
            }
            Some(Rename(to)) => match inline_value {
                Some(v) => out.push(format!("{to}={v}").into()),
                None => out.push(to.into()),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(args: &[&str]) -> Result<Vec<String>, String> {
        rewrite(args.iter().map(OsString::from))
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn renames_noops_and_refusals() {
        assert_eq!(
            rw(&["glmtool", "run", "-ngl", "99", "-sys", "be brief", "-co"]).unwrap(),
            [
                "glmtool",
                "run",
                "--gpu-layers",
                "99",
                "--system",
                "be brief",
                "--color"
            ]
        );
        assert_eq!(
            rw(&["glmtool", "run", "--n-gpu-layers=5", "--no-mmap"]).unwrap(),
            ["glmtool", "run", "--gpu-layers=5"]
        );
        assert_eq!(
            rw(&["glmtool", "run", "-fa", "-p", "hi"]).unwrap(),
            ["glmtool", "run", "--flash-attn", "-p", "hi"]
        );
        assert_eq!(
            rw(&["glmtool", "bench", "-fa", "on", "-ctk", "q8_0", "-ctv=q4_0"]).unwrap(),
            [
                "glmtool",
                "bench",
                "--flash-attn",
                "on",
                "--cache-type-k",
                "q8_0",
                "--cache-type-v=q4_0"
            ]
        );
        assert_eq!(
            rw(&["glmtool", "serve", "-np", "4", "-cb"]).unwrap(),
            ["glmtool", "serve", "--parallel", "4"]
        );
        // after `--` nothing is touched
        assert_eq!(
            rw(&["glmtool", "run", "--", "-fa"]).unwrap(),
            ["glmtool", "run", "--", "-fa"]
        );
    }

    #[test]
    fn every_refused_flag_is_one_line_and_readme_lists_every_flag() {
        let readme = include_str!("../../../README.md");
        for (names, c) in FLAGS {
            for n in *names {
                assert!(
                    readme.contains(&format!("`{n}`")),
                    "README's table lacks {n}"
                );
                let got = rw(&["glmtool", "run", n, "x", "-p", "hi"]);
                match c {
                    Missing(..) => {
                        let e = got.unwrap_err();
                        assert!(e.starts_with(&format!("glmtool has no {n} (")), "{e}");
                        assert!(!e.contains('\n'), "{e}");
                    }
                    Noop(_) => assert_eq!(got.unwrap(), ["glmtool", "run", "x", "-p", "hi"]),
                    Rename(to) => assert_eq!(got.unwrap(), ["glmtool", "run", to, "x", "-p", "hi"]),
                }
            }
        }
    }

    #[test]
    fn every_row_is_a_flag_and_no_flag_is_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for (names, c) in FLAGS {
            for n in *names {
                assert!(n.starts_with('-') && !n.contains('='), "{n}");
                assert!(seen.insert(*n), "{n} listed twice");
            }
            match c {
                Missing(m, i) => assert!(!m.is_empty() && !i.is_empty()),
                Noop(why) => assert!(!why.is_empty()),
                Rename(to) => assert!(to.starts_with("--")),
            }
        }
    }
}

/// llama.cpp's `string_process_escapes`: `\n \r \t \' \" \\` and `\xHH`; any other backslash
/// stays as typed. An `\xHH` that leaves invalid UTF-8 is an error (glmtool's text is UTF-8).
pub fn process_escapes(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        match b[i] {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'x' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ASCII hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            c => out.extend([b'\\', c]),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|e| {
        format!(
            "{s:?}: its escapes make invalid UTF-8 at byte {} (pass --no-escape to keep backslashes as typed)",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod escape_tests {
    use super::process_escapes;

    #[test]
    fn escapes_are_llama_cpps() {
        assert_eq!(
            process_escapes(r#"a\nb\tc\\d\'\""#).unwrap(),
            "a\nb\tc\\d'\""
        );
        assert_eq!(process_escapes(r"\x41\x7a").unwrap(), "Az");
        assert_eq!(process_escapes(r"C:\path\q").unwrap(), r"C:\path\q");
        assert_eq!(process_escapes(r"\x4").unwrap(), r"\x4");
        assert_eq!(process_escapes(r"\xzz end\").unwrap(), r"\xzz end\");
        assert_eq!(process_escapes(r"\xc3\xa9").unwrap(), "é");
        assert!(process_escapes(r"\xff")
            .unwrap_err()
            .contains("invalid UTF-8"));
    }
}
