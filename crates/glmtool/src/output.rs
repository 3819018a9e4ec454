//! What `convert` and `quantize` do around their output file: remove the temporary files of
//! runs that were killed, and treat SIGTERM and SIGHUP like Ctrl-C (stop, remove the temporary
//! file, exit non-zero), so that `kill`, a closed terminal or a service manager never leave
//! hundreds of MB of hidden `.NAME.PID-N.tmp` behind.

use std::path::Path;
use std::sync::atomic::Ordering;

/// Call before writing `dest`.
pub fn prepare(dest: &Path) {
    for (path, pid) in gguf::atomic::remove_stale_temp_files(dest) {
        eprintln!(
            "removed {}: a temporary file of process {pid}, which no longer runs",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGTERM};
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP]) {
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    crate::INTERRUPTED.store(true, Ordering::SeqCst);
                }
            });
        }
    }
}

/// `println!` that returns the write error instead of panicking: a closed pipe
/// (`glmtool info … | head -1`) ends the subcommand with an `io::Error` of kind `BrokenPipe`,
/// which `main` turns into a quiet exit with status 0. Use as `outln!(...)?`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}
