//! Progress bars for convert/quantize/perplexity: shown only on a terminal and without --quiet.

use glm_convert::{Progress, Summary};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

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
