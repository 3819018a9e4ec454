//! Atomic output files: write to a temporary file beside the destination, rename on success,
//! remove on failure or drop. A failed or interrupted run never leaves a partial output file.

use crate::GgufError;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A temporary file that becomes `dest` on [`AtomicFile::commit`].
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
    overwrite: bool,
}

impl AtomicFile {
    /// Creates the temporary file. Fails if `dest` exists and `overwrite` is false.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self, GgufError> {
        if !overwrite && dest.exists() {
            return Err(GgufError::Exists {
                path: dest.to_path_buf(),
            });
        }
        let file_name = dest
            .file_name()
            .ok_or_else(|| GgufError::Invalid(format!("{}: not a file path", dest.display())))?;
        let tmp = dest.with_file_name(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let f = File::create(&tmp).map_err(|e| GgufError::Io {
            path: tmp.clone(),
            err: e,
        })?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, f)),
            overwrite,
        })
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary path (for messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The writer. Valid until commit.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("writer taken only by commit")
    }

    /// Flushes, syncs and renames the temporary file to the destination; returns its size.
    pub fn commit(mut self) -> Result<u64, GgufError> {
        let w = self.writer.take().expect("commit called once");
        let f = w.into_inner().map_err(|e| GgufError::Io {
            path: self.tmp.clone(),
            err: e.into_error(),
        })?;
        let io = |e| GgufError::Io {
            path: self.tmp.clone(),
            err: e,
        };
        f.sync_all().map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        drop(f);
        if !self.overwrite && self.dest.exists() {
            return Err(GgufError::Exists {
                path: self.dest.clone(),
            });
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| GgufError::Io {
            path: self.dest.clone(),
            err: e,
        })?;
        self.tmp.clear();
        Ok(size)
    }
}

/// Removes the temporary files of `dest` (`.NAME.PID.tmp` beside it) whose process no longer
/// runs — left by a convert that was killed (SIGKILL, power loss) before it could clean up.
/// Returns the files removed, with their PIDs. Linux only (liveness from /proc); elsewhere none.
pub fn remove_stale_temp_files(dest: &Path) -> Vec<(PathBuf, u32)> {
    let mut removed = Vec::new();
    if !cfg!(target_os = "linux") {
        return removed;
    }
    let (Some(name), Some(dir)) = (dest.file_name(), dest.parent()) else {
        return removed;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new("/proc").join(pid.to_string()).exists()
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed.push((e.path(), pid));
        }
    }
    removed
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.writer.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
