//! Progress bars for convert/quantize/perplexity: shown only on a terminal and without --quiet.

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
