//! The terminal while a chat reply streams ("reply mode").
//!
//! At the prompt, rustyline owns the terminal (raw mode, line editing). Between prompts the
//! terminal would be in its normal cooked mode, where what the user types ahead is echoed into
//! the reply text, the line discipline edits it, and Ctrl-C both echoes `^C` over the reply and
//! flushes the output still queued for the screen. So while a reply streams, [`ReplyMode`] sets
//! the terminal to: no echo, no line editing (keys are queued byte by byte in the kernel's
//! input buffer, exactly as rustyline's raw mode would read them, Enter as `\r`), signals on
//! (Ctrl-C still stops the reply, Ctrl-Z still suspends) and no flush on a signal (`NOFLSH`:
//! neither the reply already written nor the keys typed ahead are lost). When the reply ends
//! the old settings come back without flushing input (`TCSADRAIN`), and the next prompt reads
//! the queued keys as if typed there: the lines run in order, a partial line is left for
//! editing. rustyline's `buffer-redux` feature keeps what one read took beyond the first line
//! for the next prompt, so several lines queued at once all arrive.
//!
//! Unix only; elsewhere the guard does nothing.

/// Reply mode until dropped (nothing when standard input is not a terminal).
pub struct ReplyMode {
    active: bool,
}

impl ReplyMode {
    pub fn enter() -> Self {
        ReplyMode {
            active: imp::enter(),
        }
    }
}

impl Drop for ReplyMode {
    fn drop(&mut self) {
        if self.active {
            restore();
        }
    }
}

/// Puts back the settings reply mode replaced, if it is on (also from the Ctrl-C handler
/// before a second Ctrl-C ends the process).
pub fn restore() {
    imp::restore();
}

#[cfg(unix)]
mod imp {
    use nix::sys::termios::{
        tcgetattr, tcsetattr, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices, Termios,
    };
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    use std::sync::Mutex;

    /// The settings before reply mode.
    static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

    pub fn enter() -> bool {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return false;
        }
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return false;
        };
        let mut t = saved.clone();
        t.local_flags &=
            !(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ICANON | LocalFlags::IEXTEN);
        t.local_flags |= LocalFlags::ISIG | LocalFlags::NOFLSH;
        t.input_flags &= !InputFlags::ICRNL;
        t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        let Ok(mut slot) = SAVED.lock() else {
            return false;
        };
        if tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &t).is_err() {
            return false;
        }
        *slot = Some(saved);
        true
    }

    pub fn restore() {
        // try_lock: the Ctrl-C handler must never wait on the main thread
        let Ok(mut slot) = SAVED.try_lock() else {
            return;
        };
        if let Some(t) = slot.take() {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &t);
        }
    }
}

#[cfg(not(unix))]
mod imp {
    pub fn enter() -> bool {
        false
    }
    pub fn restore() {}
}
