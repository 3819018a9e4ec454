//! Progress bars for convert/quantize/perplexity, and spinners for loading a model or reading a
//! prompt: shown only on a terminal (the bars also not with --quiet).

use glm_convert::{Progress, Summary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};

/// A bar over `len` units, hidden when stderr is not a terminal or `quiet`.
pub fn bar(len: u64, quiet: bool, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if quiet || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Human size: 1.23 GiB.
pub fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// The bar of `convert` and `quantize`: bytes of input, and the tensor being written.
pub fn conversion_bar(quiet: bool) -> ProgressBar {
    bar(
        0,
        quiet,
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
}

/// Feeds converter progress events into `pb`.
pub fn on_conversion(pb: &ProgressBar) -> impl Fn(Progress) + '_ {
    move |p| match p {
        Progress::Start { total_bytes, .. } => pb.set_length(total_bytes),
        Progress::Tensor { name, ty, bytes_in } => {
            pb.inc(bytes_in);
            pb.set_message(format!("{name} -> {ty}"));
        }
    }
}

/// The final line of `convert` and `quantize`.
pub fn print_summary(out: &std::path::Path, s: &Summary) {
    if let Some(f) = s.family {
        eprintln!(
            "model family: {} (prompt format: {}; --family to choose another)",
            f.as_str(),
            f.chat_format().as_str()
        );
    }
    eprintln!(
        "wrote {}: {} tensors, {}, {:.2} bits per weight, {:.1} s",
        out.display(),
        s.n_tensors,
        size(s.bytes_written),
        s.bits_per_weight(),
        s.seconds
    );
}

/// How long an operation runs before its spinner shows (`GLMTOOL_PROGRESS_DELAY_MS` sets
/// another, in milliseconds): quick ones print nothing.
const SPINNER_DELAY: std::time::Duration = std::time::Duration::from_millis(300);
const SPINNER_TICK: std::time::Duration = std::time::Duration::from_millis(100);
const SPINNER_FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// A one-line activity indicator on stderr ("⠙ loading model.gguf (3 s)") for what has no
/// measurable progress, such as loading a model or reading a prompt. Drawn only when stderr is
/// a terminal, and only once the operation has taken [`SPINNER_DELAY`]; [`Spinner::stop`] (or
/// dropping it) erases the line before anything else is printed.
pub struct Spinner {
    message: std::sync::Arc<std::sync::Mutex<String>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    pub fn start(message: impl Into<String>) -> Spinner {
        let message = std::sync::Arc::new(std::sync::Mutex::new(message.into()));
        let mut s = Spinner {
            message: message.clone(),
            stop: None,
            thread: None,
        };
        if !std::io::stderr().is_terminal() {
            return s;
        }
        let delay = std::env::var("GLMTOOL_PROGRESS_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(SPINNER_DELAY, std::time::Duration::from_millis);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t0 = std::time::Instant::now();
        let draw = move |frame: usize| {
            let text = message.lock().map(|m| m.clone()).unwrap_or_default();
            // (write!, not eprint!: a closed terminal is no reason to panic)
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2K{} {text} ({} s)",
                SPINNER_FRAMES[frame % SPINNER_FRAMES.len()],
                t0.elapsed().as_secs()
            );
        };
        // no delay: the first frame is drawn before start returns
        let mut frame = 0;
        if delay.is_zero() {
            draw(frame);
            frame += 1;
        }
        s.stop = Some(tx);
        s.thread = Some(std::thread::spawn(move || {
            use std::sync::mpsc::RecvTimeoutError::Timeout;
            if frame == 0 && rx.recv_timeout(delay) != Err(Timeout) {
                return; // done before it was worth showing
            }
            loop {
                if frame > 0 && rx.recv_timeout(SPINNER_TICK) != Err(Timeout) {
                    let _ = write!(std::io::stderr(), "\r\x1b[2K");
                    return;
                }
                draw(frame);
                frame += 1;
            }
        }));
        s
    }

    /// Replaces the text shown.
    pub fn set_message(&self, text: impl Into<String>) {
        if let Ok(mut m) = self.message.lock() {
            *m = text.into();
        }
    }

    /// Erases the line (if it was drawn) and stops; later calls do nothing.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}
