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
    /// The files the output is made from, with their identity (device, inode): the output
    /// must never replace one of them.
    inputs: Vec<(PathBuf, FileId)>,
}

/// A file's identity: (device, inode) on Unix; elsewhere its canonical path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileId {
    #[cfg(unix)]
    dev_ino: (u64, u64),
    #[cfg(not(unix))]
    canonical: PathBuf,
}

impl FileId {
    /// The identity of the file `path` names, from its metadata (links followed).
    fn of(path: &Path, meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let _ = path;
            FileId {
                dev_ino: (meta.dev(), meta.ino()),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            FileId {
                canonical: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
            }
        }
    }
}

/// What kind of non-regular file `meta` describes, for messages.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

impl AtomicFile {
    /// Creates the temporary file. Fails if `dest` exists and `overwrite` is false.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self, GgufError> {
        Self::create_from(dest, overwrite, &[])
    }

    /// [`AtomicFile::create`] for an output made from `inputs`. Whatever `overwrite` says, it
    /// refuses a `dest` that exists and is not a regular file (a device node, FIFO, socket or
    /// directory) and a `dest` that is one of `inputs` (the same path, a symbolic or hard link:
    /// compared by device and inode). Both are checked again just before the final rename.
    pub fn create_from(dest: &Path, overwrite: bool, inputs: &[&Path]) -> Result<Self, GgufError> {
        let inputs: Vec<(PathBuf, FileId)> = inputs
            .iter()
            .filter_map(|p| {
                let meta = std::fs::metadata(p).ok()?;
                Some((p.to_path_buf(), FileId::of(p, &meta)))
            })
            .collect();
        check_dest(dest, overwrite, &inputs)?;
        let file_name = dest
            .file_name()
            .ok_or_else(|| GgufError::Invalid(format!("{}: not a file path", dest.display())))?;
        // `.NAME.PID-N.tmp`: unique within the process too; created new, never opened through
        // a name planted in advance (a link, a leftover of an earlier process with this PID)
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (tmp, f) = loop {
            let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dest.with_file_name(format!(
                ".{}.{}-{n}.tmp",
                file_name.to_string_lossy(),
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => continue,
                Err(e) => return Err(GgufError::Io { path: tmp, err: e }),
            }
        };
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, f)),
            overwrite,
            inputs,
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

    /// Flushes, syncs and moves the temporary file to the destination; returns its size.
    ///
    /// Without `overwrite` the move cannot replace a file that appeared meanwhile (another
    /// process writing the same output): it is a hard link, which fails if the destination
    /// exists, then the temporary name is removed. Only on a file system without hard links
    /// does it fall back to check-then-rename.
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
        check_dest(&self.dest, self.overwrite, &self.inputs)?;
        if !self.overwrite {
            match std::fs::hard_link(&self.tmp, &self.dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.tmp);
                    self.tmp.clear();
                    return Ok(size);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(GgufError::Exists {
                        path: self.dest.clone(),
                    });
                }
                // no hard links here (FAT, some network file systems): check, then rename
                Err(_) if !self.dest.exists() && std::fs::symlink_metadata(&self.dest).is_err() => {
                }
                Err(_) => {
                    return Err(GgufError::Exists {
                        path: self.dest.clone(),
                    });
                }
            }
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| GgufError::Io {
            path: self.dest.clone(),
            err: e,
        })?;
        self.tmp.clear();
        Ok(size)
    }
}

/// The checks on the destination before creating and before replacing it.
fn check_dest(dest: &Path, overwrite: bool, inputs: &[(PathBuf, FileId)]) -> Result<(), GgufError> {
    // `metadata` follows symbolic links: a link to an input or a device is judged by its target
    let meta = match std::fs::metadata(dest) {
        Ok(m) => m,
        Err(_) => {
            // a dangling symbolic link is an existing name
            if !overwrite && std::fs::symlink_metadata(dest).is_ok() {
                return Err(GgufError::Exists {
                    path: dest.to_path_buf(),
                });
            }
            return Ok(());
        }
    };
    let id = FileId::of(dest, &meta);
    if let Some((input, _)) = inputs.iter().find(|(_, i)| *i == id) {
        return Err(GgufError::SameAsInput {
            path: dest.to_path_buf(),
            input: input.clone(),
        });
    }
    if !meta.is_file() {
        return Err(GgufError::NotRegular {
            path: dest.to_path_buf(),
            kind: file_kind(&meta).to_string(),
        });
    }
    if !overwrite {
        return Err(GgufError::Exists {
            path: dest.to_path_buf(),
        });
    }
    Ok(())
}

/// Removes the temporary files of `dest` (`.NAME.PID-N.tmp` beside it) whose process no longer
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
            // `PID-N` (or `PID` from glmtool before 0.2)
            .and_then(|pid| {
                pid.split_once('-')
                    .map_or(pid, |(pid, _)| pid)
                    .parse::<u32>()
                    .ok()
            })
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
