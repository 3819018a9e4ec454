//! A warning when the CPUs are already busy with other work. ggml's threads spin while they
//! wait for each other, so when another program holds a core, the default thread count (one
//! per physical core) can make decoding many times slower than fewer threads (2 cores, one
//! other busy process, `bench -p 0 -n 128` on the demo model: 23 ± 19 tokens/s with 2 threads,
//! 6,688 ± 162 with `-t 1`).
//!
//! Linux only (elsewhere nothing is checked). The figure is the smaller of two from
//! `/proc/loadavg`: the 1-minute load average (which lags, and still counts glmtool runs that
//! just ended) and the tasks running right now less this one (sampled a few times, as it
//! jumps). `GLMTOOL_LOADAVG` replaces the file's contents, for tests (or `0 0 0 1/1 0` to
//! silence the check).

use std::sync::Once;
use std::time::Duration;

/// Replaces the contents of `/proc/loadavg` (e.g. `6.50 6.00 5.00 8/176 1234`).
pub const LOADAVG_ENV: &str = "GLMTOOL_LOADAVG";

/// How many times, and how far apart, the running-task count is read.
const SAMPLES: usize = 3;
const SAMPLE_GAP: Duration = Duration::from_millis(20);

/// Warns once on stderr, with a `-t` hint, when other work keeps the CPUs busy enough that
/// `n_threads` (the default count) would compete with it.
pub fn warn_if_busy(n_threads: usize) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Some(line) = advice(n_threads) {
            eprintln!("{line}");
        }
    });
}

/// The warning to print, if any.
fn advice(n_threads: usize) -> Option<String> {
    if n_threads < 2 {
        return None; // nothing fewer to suggest
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let first = read()?;
    // a restricted process (affinity, cgroup quota) sees the whole machine's load: scale it
    // to the CPUs it may use
    let scale = match online_cpus() {
        Some(all) if all > cpus => cpus as f64 / all as f64,
        _ => 1.0,
    };
    if !busy(first.avg1 * scale, n_threads, cpus) {
        return None;
    }
    let mut running = first.running;
    for _ in 1..SAMPLES {
        std::thread::sleep(SAMPLE_GAP);
        running = running.max(read()?.running);
    }
    let now = running.saturating_sub(1) as f64 * scale;
    let other = (first.avg1 * scale).min(now);
    if !busy(other, n_threads, cpus) {
        return None;
    }
    let free = (cpus as f64 - other).floor().max(1.0) as usize;
    Some(format!(
        "warning: the CPUs are busy with other work (load average {:.2}, {running} tasks \
         running, {cpus} CPUs): {n_threads} threads, which spin while they wait for each \
         other, can make decoding many times slower; try -t {}",
        first.avg1,
        free.min(n_threads - 1)
    ))
}

/// Whether `other` CPUs' worth of work leaves less than `n_threads` CPUs free (with half a
/// CPU of slack).
fn busy(other: f64, n_threads: usize, cpus: usize) -> bool {
    other + n_threads as f64 > cpus as f64 + 0.5
}

#[derive(Debug, PartialEq)]
struct Load {
    /// The 1-minute load average.
    avg1: f64,
    /// Tasks running or runnable when it was read (this one included).
    running: usize,
}

/// `/proc/loadavg`, or `GLMTOOL_LOADAVG`.
fn read() -> Option<Load> {
    let text = match std::env::var(LOADAVG_ENV) {
        Ok(t) => t,
        Err(_) if cfg!(target_os = "linux") => std::fs::read_to_string("/proc/loadavg").ok()?,
        Err(_) => return None,
    };
    parse(&text)
}

/// `avg1 avg5 avg15 running/total last_pid`.
fn parse(text: &str) -> Option<Load> {
    let mut fields = text.split_whitespace();
    let avg1 = fields.next()?.parse::<f64>().ok()?;
    let running = fields.nth(2)?.split_once('/')?.0.parse().ok()?;
    avg1.is_finite().then_some(Load { avg1, running })
}

/// The machine's online CPUs (`cpuN` lines of `/proc/stat`), which the load average covers.
fn online_cpus() -> Option<usize> {
    if std::env::var_os(LOADAVG_ENV).is_some() {
        return None; // the test's figure is for this process's CPUs
    }
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let n = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_loadavg() {
        assert_eq!(
            parse("6.56 6.28 5.69 8/176 18694\n"),
            Some(Load {
                avg1: 6.56,
                running: 8
            })
        );
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("1.0 1.0 1.0 x 1"), None);
    }

    #[test]
    fn busy_leaves_fewer_cpus_than_threads() {
        assert!(busy(1.0, 2, 2));
        assert!(!busy(0.4, 2, 2));
        assert!(!busy(7.0, 8, 16));
        assert!(busy(9.0, 8, 16));
    }
}
