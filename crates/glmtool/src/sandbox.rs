//! Running the model's code-interpreter cells (`run --allow-exec`) with python3, as contained
//! as a process can make it on Linux without a container runtime:
//!
//! - **A fresh, private working folder.** With namespaces the cell's HOME and working directory
//!   are a new tmpfs mounted on `/tmp` inside a private mount namespace (nobody else can see or
//!   plant anything in it; it vanishes with the cell). Without namespaces it is a new directory
//!   with a random name, created with mode 0700 (fails if it exists), removed afterwards.
//! - **python3 -I**: isolated mode (no user site-packages, no `PYTHON*` variables, neither the
//!   working directory nor the script's on `sys.path`), so a planted `json.py` or `.pth` is inert.
//! - **Everything the cell starts dies with it.** python3 runs in a new PID namespace
//!   (`unshare --pid --fork --kill-child`) with its own `/proc` (`--mount-proc`): the host's
//!   processes and their command lines are invisible, and when the cell ends the kernel kills
//!   whatever it left. Without namespaces, the cell's process group is killed.
//! - **No network and no Unix sockets of the user's session**: a new network namespace (TCP, UDP,
//!   abstract sockets cut); empty tmpfs over `/tmp`, `/run` (`/var/run`), `/var/tmp`, `/dev/shm`,
//!   `/home`, `/root`, `/mnt`, `/media`, `/srv`, so docker.sock, D-Bus, ssh-agent and gpg-agent
//!   sockets and the users' home folders are out of sight; every other mount is remounted
//!   read-only.
//! - **Not root.** Started as root, the cell runs as `nobody` (setpriv: uid/gid 65534, no
//!   groups, no capabilities, no_new_privs); where that cannot be done, cells are refused.
//! - **Limits on the cell as a whole**: its `/tmp` holds at most `file_bytes` in all; as root a
//!   memory cgroup (v1 or v2) caps all its processes together at `memory_bytes` (tmpfs pages
//!   included) and a pids cgroup caps their number; plus per-process rlimits (`prlimit`: CPU
//!   time, address space, file size, processes) and a wall-clock timeout and output cap.
//! - **A minimal environment**: PATH, HOME, LANG only; none of the user's variables.
//!
//! Not contained: the cell can read every world-readable file outside the hidden folders (as
//! an ordinary user it is the user, mapped, so it reads what the user reads outside them), and
//! a Unix socket kept elsewhere than the hidden folders stays reachable where its permissions
//! allow; without namespaces (macOS, kernels that forbid unprivileged user namespaces) only the
//! fresh folder, `-I`, the environment, rlimits, timeout and output cap apply. docs/server.md
//! has the table.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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
    /// Per process (address space) and, where a memory cgroup can be made, for the whole cell.
    pub memory_bytes: u64,
    /// Per file (rlimit) and, with namespaces, for everything the cell writes in all.
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
    /// PID, network and mount namespaces with the private /tmp, /run, … and read-only mounts.
    pub namespaces: bool,
    pub rlimits: bool,
    /// Started as root: the cell drops to `nobody`.
    pub root: bool,
}

/// The python3 the cell runs: a system one, reachable when `/root` and `/home` are hidden and
/// as `nobody` (a pyenv shim under the user's home is neither).
fn python() -> &'static str {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("python3")
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // /proc/self is owned by the process's effective uid
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
    #[cfg(not(unix))]
    false
}

pub fn isolation() -> Isolation {
    static I: OnceLock<Isolation> = OnceLock::new();
    *I.get_or_init(|| {
        let root = is_root();
        let ok = |cmd: &mut Command| {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // the probe runs the real set-up script, so a kernel that allows the namespaces but
        // not the mounts falls back as a whole
        let namespaces = cfg!(target_os = "linux")
            && ok(Command::new("unshare")
                .args(ns_flags(root))
                .args(["--", "sh", "-c", SETUP, "sh", "1048576", "--", "true"]));
        Isolation {
            namespaces,
            rlimits: cfg!(target_os = "linux")
                && ok(Command::new("prlimit").args(["--cpu=1", "--", "true"])),
            root,
        }
    })
}

fn ns_flags(root: bool) -> Vec<&'static str> {
    let mut f = Vec::new();
    if !root {
        // an ordinary user gets the right to mount through a user namespace (mapped root =
        // the user outside); root needs none and must not keep real root's powers inside one
        f.extend(["--user", "--map-root-user"]);
    }
    f.extend([
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
    ]);
    f
}

/// Run by `sh -c` as the first process of the new namespaces: `$1` the size of the cell's
/// `/tmp` in bytes, `$2…` cgroup folders to join, then (after `--`) the command to exec.
/// Mount failures of the hidden folders are fatal (the cell must not run half-contained).
const SETUP: &str = r#"set -e
size=$1; shift
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do echo 0 > "$1/cgroup.procs"; shift; done
[ "$#" -gt 0 ] && shift
mount --make-rprivate /
mount -t tmpfs -o "size=$size,mode=1777,nosuid,nodev" glmtool-cell /tmp
for d in /run /var/tmp /dev/shm /home /root /mnt /media /srv; do
  if [ -d "$d" ] && [ ! -L "$d" ]; then mount -t tmpfs -o size=65536,mode=755,nosuid,nodev,noexec glmtool-hidden "$d"; fi
done
awk '{print $5}' /proc/self/mountinfo | while read -r m; do
  case "$m" in /proc|/proc/*|/tmp|/dev|/dev/pts|/dev/shm) continue;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
if [ -w /etc ]; then exit 97; fi
cd /tmp
unset OLDPWD PWD
exec "$@"
"#;

/// A cgroup made for one cell (root only), removed on drop.
struct CellCgroup {
    dirs: Vec<PathBuf>,
}

impl CellCgroup {
    /// Memory and pids cgroups with the cell's limits, v2 or v1; None where they cannot be made.
    fn new(limits: &Limits, name: &str) -> Option<CellCgroup> {
        let mut cg = CellCgroup { dirs: Vec::new() };
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let ok = if std::fs::read_to_string(v2)
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids");
            let d = Path::new("/sys/fs/cgroup").join(name);
            std::fs::create_dir(&d).is_ok() && {
                cg.dirs.push(d.clone());
                std::fs::write(d.join("memory.max"), limits.memory_bytes.to_string()).is_ok()
                    && std::fs::write(d.join("memory.swap.max"), "0").is_ok()
                    && std::fs::write(d.join("pids.max"), limits.processes.to_string()).is_ok()
            }
        } else {
            let mem = Path::new("/sys/fs/cgroup/memory").join(name);
            let pids = Path::new("/sys/fs/cgroup/pids").join(name);
            std::fs::create_dir(&mem).is_ok() && {
                cg.dirs.push(mem.clone());
                let swap = mem.join("memory.memsw.limit_in_bytes");
                std::fs::write(
                    mem.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )
                .is_ok()
                    && (!swap.exists()
                        || std::fs::write(&swap, limits.memory_bytes.to_string()).is_ok())
                    && std::fs::create_dir(&pids).is_ok()
                    && {
                        cg.dirs.push(pids.clone());
                        std::fs::write(pids.join("pids.max"), limits.processes.to_string()).is_ok()
                    }
            }
        };
        ok.then_some(cg)
    }

    /// Whether the memory cgroup's limit was hit.
    fn oom(&self) -> bool {
        self.dirs.first().is_some_and(|d| {
            let v2 = std::fs::read_to_string(d.join("memory.events"))
                .ok()
                .and_then(|e| {
                    e.lines().find_map(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                });
            let v1 = std::fs::read_to_string(d.join("memory.failcnt"))
                .ok()
                .and_then(|n| n.trim().parse::<u64>().ok());
            v2.or(v1).is_some_and(|n| n > 0)
        })
    }
}

impl Drop for CellCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // the cell's processes are dead by now; the kernel may take a moment to let go
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs `code` with `python3 -I -`: Ok(stdout+stderr) when it exits 0, Err(output or reason)
/// otherwise; killed (with everything it started) after `limits.timeout`; output cut at
/// `limits.output_bytes`.
pub fn run_python(code: &str, limits: Limits) -> Result<String, String> {
    let iso = isolation();
    if iso.root && which("setpriv").is_none() {
        return Err(
            "refusing to run the cell as root: setpriv (util-linux) is needed to drop to nobody"
                .into(),
        );
    }
    let mut argv: Vec<String> = Vec::new();
    // the fresh private folder of the namespace-less path (with namespaces, the cell's /tmp)
    let mut folder: Option<tempfile::TempDir> = None;
    let mut cgroup = None;
    let home: PathBuf;
    if iso.namespaces {
        let name = format!("glmtool-cell-{}", random_suffix());
        cgroup = if iso.root {
            CellCgroup::new(&limits, &name)
        } else {
            None
        };
        argv.push("unshare".into());
        argv.extend(ns_flags(iso.root).iter().map(|s| s.to_string()));
        argv.extend([
            "--".into(),
            "sh".into(),
            "-c".into(),
            SETUP.into(),
            "sh".into(),
        ]);
        argv.push(limits.file_bytes.to_string());
        if let Some(cg) = &cgroup {
            argv.extend(cg.dirs.iter().map(|d| d.display().to_string()));
        }
        argv.push("--".into());
        home = PathBuf::from("/tmp");
    } else {
        let dir = tempfile::Builder::new()
            .prefix("glmtool-cell-")
            .tempdir()
            .map_err(|e| {
                format!(
                    "cannot create the cell's folder in {}: {e}",
                    std::env::temp_dir().display()
                )
            })?;
        #[cfg(unix)]
        if iso.root {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534))
                .map_err(|e| format!("cannot hand the cell's folder to nobody: {e}"))?;
        }
        home = dir.path().to_path_buf();
        folder = Some(dir);
    }
    if iso.rlimits {
        argv.push("prlimit".into());
        argv.push(format!("--cpu={}", limits.cpu_seconds));
        argv.push(format!("--as={}", limits.memory_bytes));
        argv.push(format!("--fsize={}", limits.file_bytes));
        argv.push(format!("--nproc={}", limits.processes));
        argv.push("--".into());
    }
    if iso.root {
        argv.extend(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]
            .map(String::from),
        );
    }
    argv.extend([
        python().into(),
        "-I".into(),
        "-B".into(),
        "-X".into(),
        "utf8".into(),
        "-".into(),
    ]);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(folder.as_ref().map_or(Path::new("/"), |d| d.path()))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut result = run(cmd, code, limits);
    if let (Err(e), Some(cg)) = (&mut result, &cgroup) {
        if cg.oom() {
            e.push_str(&format!(
                "\nMemoryError: the cell used more than {} MiB in all and was killed",
                limits.memory_bytes >> 20
            ));
        }
    }
    drop(cgroup);
    drop(folder);
    result
}

fn which(name: &str) -> Option<PathBuf> {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

/// 64 random bits for a cgroup's name (its folder is created exclusively: a name taken fails).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

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

    #[test]
    fn each_cell_gets_a_fresh_private_folder_and_planted_modules_are_inert() {
        if !have_python() {
            return;
        }
        // a cell plants modules where the next one starts; python -I and a fresh folder
        // make them inert
        let plant = "import os\nfor n in ('json.py', 'sitecustomize.py', 'evil.pth'):\n    open(n, 'w').write('print(\"PLANTED\")\\n')\nprint(os.getcwd())";
        let first = run_python(plant, quick()).unwrap();
        let probe = "import json, os, sys\nprint(json.__file__)\nprint(sorted(os.listdir('.')))\nprint('' in sys.path, os.getcwd() in sys.path)";
        let out = run_python(probe, quick()).unwrap();
        assert!(!out.contains("PLANTED"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("/lib/python3"),
            "json came from {}",
            lines[0]
        );
        assert_eq!(lines[1], "[]", "the cell's folder was not fresh: {out}");
        assert_eq!(lines[2], "False False", "{out}");
        // the namespace-less folder is gone afterwards; with namespaces it never was on the host
        if !isolation().namespaces {
            assert!(!Path::new(&first).exists(), "{first} was left behind");
        } else {
            assert_eq!(first, "/tmp");
        }
    }

    #[test]
    fn unix_sockets_and_host_processes_are_out_of_sight() {
        if !have_python() || !isolation().namespaces {
            eprintln!("skipped: no namespaces here (docs/server.md: not contained)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mut marker = Command::new("sleep").arg("30.31416").spawn().unwrap();
        let code = format!(
            "import socket, glob\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\n    print('connected')\nexcept OSError as e:\n    print('refused', type(e).__name__)\nseen = []\nfor p in glob.glob('/proc/[0-9]*/cmdline'):\n    try:\n        seen.append(open(p, 'rb').read())\n    except OSError:\n        pass\nprint(len(seen), any(b'30.31416' in c for c in seen))\nimport os\nprint(sorted(os.listdir('/run')), os.listdir('/home') if os.path.isdir('/home') else [])",
            sock.display().to_string()
        );
        let out = run_python(&code, quick());
        let _ = marker.kill();
        let _ = marker.wait();
        let out = out.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("refused"),
            "a Unix socket of the host was reachable: {out}"
        );
        let (n, seen) = lines[1].split_once(' ').unwrap();
        assert_eq!(
            seen, "False",
            "the cell saw a host process's command line: {out}"
        );
        assert!(
            n.parse::<usize>().unwrap() < 10,
            "the cell sees {n} processes: {out}"
        );
        assert!(!lines[2].contains("dbus"), "/run is the host's: {out}");
    }

    #[test]
    fn as_root_the_cell_is_nobody_and_capped_as_a_whole() {
        if !have_python() || !isolation().root {
            eprintln!("skipped: not root");
            return;
        }
        let out = run_python(
            "import os\nprint(os.getuid(), os.getgid(), os.getgroups())\nfor f in ('/etc/shadow',):\n    try:\n        open(f).read(); print('read', f)\n    except OSError as e:\n        print('denied', type(e).__name__)\ntry:\n    open('/etc/glmtool-cell-was-here', 'w'); print('wrote /etc')\nexcept OSError as e:\n    print('denied', type(e).__name__)",
            quick(),
        )
        .unwrap();
        assert!(!Path::new("/etc/glmtool-cell-was-here").exists());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "65534 65534 []", "{out}");
        assert!(
            lines[1].starts_with("denied") && lines[2].starts_with("denied"),
            "{out}"
        );
        if !isolation().namespaces {
            return;
        }
        // disk: three files, each under the per-file limit, together over the cell's budget
        let small = Limits {
            file_bytes: 16 << 20,
            ..quick()
        };
        let out = run_python(
            "total = 0\ntry:\n    for i in range(3):\n        with open(f'f{i}', 'wb') as f:\n            for _ in range(15):\n                f.write(b'x' * (1 << 20)); f.flush(); total += 1\nexcept OSError as e:\n    print('stopped', e.errno)\nprint(total)",
            small,
        )
        .unwrap();
        let mib: u64 = out.lines().last().unwrap().parse().unwrap();
        assert!(
            out.contains("stopped 28") && mib <= 16,
            "the cell wrote {mib} MiB: {out}"
        );
        // memory: three processes of 96 MiB each under a 192 MiB cap for the whole cell
        let capped = Limits {
            memory_bytes: 192 << 20,
            timeout: Duration::from_secs(20),
            ..quick()
        };
        if CellCgroup::new(&capped, &format!("glmtool-cell-probe-{}", random_suffix())).is_none() {
            eprintln!("skipped the memory part: no memory cgroup can be made here");
            return;
        }
        let out = run_python(
            "import subprocess, sys\nc = \"b = bytearray(b'x' * (96 << 20)); import time; time.sleep(3); print('held')\"\nps = [subprocess.Popen([sys.executable, '-I', '-c', c], stdout=subprocess.PIPE) for _ in range(3)]\nprint(sum(p.communicate()[0].count(b'held') for p in ps))",
            capped,
        );
        let held = match &out {
            Ok(o) => o.lines().last().unwrap_or("").parse::<u32>().unwrap_or(0),
            Err(_) => 0,
        };
        assert!(
            held < 3,
            "three 96 MiB processes all ran under a 192 MiB cell cap: {out:?}"
        );
    }
}
