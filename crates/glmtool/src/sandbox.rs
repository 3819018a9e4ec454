//! Running the model's code-interpreter cells (`run --allow-exec`) with python3, as contained
//! as an unprivileged process can make it on Linux:
//!
//! - **Everything the cell starts dies with it.** python3 runs as the first process of a new PID
//!   namespace (`unshare --pid --fork --kill-child`): when it exits or is killed, the kernel
//!   kills every process left in the namespace, `setsid` or not. Without namespaces, the cell
//!   gets its own process group, killed as a whole.
//! - **No network**: a new network namespace (`--net`) has only a loopback interface, down.
//! - **A minimal environment**: PATH, HOME (a fresh empty directory, also the working
//!   directory, removed afterwards), LANG; none of the user's variables (tokens, keys).
//! - **Resource limits** (`prlimit`): CPU time, address space, file size, processes.
//! - **Wall-clock timeout** and an output cap.
//!
//! Not isolated: the file system (the cell runs as the user, or as a mapped root that is the user
//! outside, and can read and write whatever the user can), and anything on machines without
//! `unshare`/`prlimit` (macOS: only the timeout, process group, environment and output cap).
//! docs/server.md has the list.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Limits of one cell.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeout: Duration,
    pub output_bytes: usize,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    pub processes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            output_bytes: 8 << 10,
            cpu_seconds: 20,
            memory_bytes: 2 << 30,
            file_bytes: 64 << 20,
            processes: 1024,
        }
    }
}

/// What this machine can isolate (probed once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isolation {
    pub namespaces: bool,
    pub rlimits: bool,
}

pub fn isolation() -> Isolation {
    static I: OnceLock<Isolation> = OnceLock::new();
    *I.get_or_init(|| {
        let ok = |cmd: &mut Command| {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        Isolation {
            namespaces: cfg!(target_os = "linux")
                && ok(Command::new("unshare").args(NS_FLAGS).arg("true")),
            rlimits: cfg!(target_os = "linux")
                && ok(Command::new("prlimit").args(["--cpu=1", "--", "true"])),
        }
    })
}

const NS_FLAGS: [&str; 6] = [
    "--user",
    "--map-root-user",
    "--net",
    "--pid",
    "--fork",
    "--kill-child",
];

/// Runs `code` with `python3 -`: Ok(stdout+stderr) when it exits 0, Err(output or reason)
/// otherwise; killed (with everything it started) after `limits.timeout`; output cut at
/// `limits.output_bytes`.
pub fn run_python(code: &str, limits: Limits) -> Result<String, String> {
    let iso = isolation();
    let home = std::env::temp_dir().join(format!(
        "glmtool-cell-{}-{}",
        std::process::id(),
        CELLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let mut argv: Vec<String> = Vec::new();
    if iso.namespaces {
        argv.push("unshare".into());
        argv.extend(NS_FLAGS.iter().map(|s| s.to_string()));
    }
    if iso.rlimits {
        argv.push("prlimit".into());
        argv.push(format!("--cpu={}", limits.cpu_seconds));
        argv.push(format!("--as={}", limits.memory_bytes));
        argv.push(format!("--fsize={}", limits.file_bytes));
        argv.push(format!("--nproc={}", limits.processes));
        argv.push("--".into());
    }
    argv.extend(["python3".into(), "-".into()]);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&home)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let result = run(cmd, code, limits);
    let _ = std::fs::remove_dir_all(&home);
    result
}

static CELLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run(mut cmd: Command, code: &str, limits: Limits) -> Result<String, String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start python3: {e}"))?;
    let pgid = child.id();
    let mut stdin = child.stdin.take().expect("piped");
    let code = code.to_string();
    std::thread::spawn(move || {
        let _ = stdin.write_all(code.as_bytes());
    });
    let limit = limits.output_bytes;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                // keep the first limit+1 bytes, drain the rest so the cell never blocks
                let _ = (&mut r).take(limit as u64 + 1).read_to_end(&mut buf);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limits.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    // Whatever is still running goes: with namespaces, killing unshare kills python3 and with it
    // the whole PID namespace; without, the process group.
    let _ = child.kill();
    let _ = child.wait();
    #[cfg(unix)]
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    // The pipes close once every process holding them is dead; wait a little for the rest of
    // the output, never forever (an escaped process could hold a pipe).
    let grace = Instant::now() + Duration::from_secs(2);
    let take = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(grace.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    };
    let mut text = take(out);
    text.extend(take(err));
    let mut text = String::from_utf8_lossy(&text).into_owned();
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[output truncated]");
    }
    match status {
        None => Err(format!(
            "{text}\nTimeoutError: the code ran longer than {} s",
            limits.timeout.as_secs_f32()
        )),
        Some(st) if st.success() => Ok(text.trim_end().to_string()),
        Some(_) => Err(text.trim_end().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_python() -> bool {
        let ok = Command::new("python3")
            .args(["-c", "pass"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: no python3");
        }
        ok
    }

    fn quick() -> Limits {
        Limits {
            timeout: Duration::from_secs(10),
            ..Limits::default()
        }
    }

    #[test]
    fn runs_with_timeout_and_output_limit() {
        if !have_python() {
            return;
        }
        assert_eq!(run_python("print(6*7)", quick()).unwrap(), "42");
        let e = run_python("1/0", quick()).unwrap_err();
        assert!(e.contains("ZeroDivisionError"), "{e}");
        let short = Limits {
            timeout: Duration::from_millis(300),
            ..quick()
        };
        let e = run_python("import time\ntime.sleep(30)", short).unwrap_err();
        assert!(e.contains("TimeoutError"), "{e}");
        let small = Limits {
            output_bytes: 64,
            ..quick()
        };
        let big = run_python("print('x' * 100000)", small).unwrap();
        assert!(
            big.ends_with("[output truncated]") && big.len() < 100,
            "{big}"
        );
    }

    #[test]
    fn what_the_cell_starts_dies_with_it() {
        if !have_python() {
            return;
        }
        let marker = std::env::temp_dir().join(format!("glmtool-escaped-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        // a background child holding the output pipes, and one that would leave a trace later
        let code = format!(
            "import subprocess\nsubprocess.Popen(['sleep', '30'])\n\
             subprocess.Popen(['sh', '-c', 'sleep 2; touch {}'], start_new_session=True)\nprint('started')",
            marker.display()
        );
        let t = Instant::now();
        let out = run_python(
            &code,
            Limits {
                timeout: Duration::from_secs(1),
                ..quick()
            },
        );
        // without the kill, reading the output waits for `sleep 30` (which holds the pipes)
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "waited {:?}",
            t.elapsed()
        );
        assert_eq!(out.unwrap(), "started");
        std::thread::sleep(Duration::from_secs(3));
        if isolation().namespaces {
            assert!(
                !marker.exists(),
                "a child that called setsid outlived the cell"
            );
        }
        let _ = std::fs::remove_file(&marker);
    }

    #[test]
    fn the_environment_is_minimal_and_limits_apply() {
        if !have_python() {
            return;
        }
        let out = run_python("import os\nprint(' '.join(sorted(os.environ)))", quick()).unwrap();
        for k in out.split(' ') {
            assert!(
                [
                    "PATH",
                    "HOME",
                    "LANG",
                    "PYTHONIOENCODING",
                    "PYTHONDONTWRITEBYTECODE",
                    "LC_CTYPE"
                ]
                .contains(&k),
                "variable {k} reached the cell: {out}"
            );
        }
        if isolation().rlimits {
            let out = run_python(
                "import resource as r\nprint(r.getrlimit(r.RLIMIT_CPU)[0], r.getrlimit(r.RLIMIT_AS)[0])",
                quick(),
            )
            .unwrap();
            assert_eq!(out, format!("20 {}", 2u64 << 30));
        }
    }

    #[test]
    fn no_network_where_namespaces_exist() {
        if !have_python() || !isolation().namespaces {
            eprintln!("skipped: no user/network namespaces here");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let code = format!(
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)"
        );
        let out = run_python(&code, quick()).unwrap();
        assert!(out.starts_with("refused"), "{out}");
    }
}
