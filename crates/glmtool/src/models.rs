//! Where a subcommand's model comes from: `-m` (a GGUF file, or a Hugging Face checkpoint folder
//! converted once into the cache and reused), else `GLMTOOL_MODEL`, else the bundled demo model
//! (embedded in the binary, converted into the cache on first use).

use anyhow::{bail, Context, Result};
use glm_convert::FileType;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// The environment variable naming the default model of every subcommand.
pub const MODEL_ENV: &str = "GLMTOOL_MODEL";

/// The cache folder: `$GLMTOOL_CACHE`, else `$XDG_CACHE_HOME/glmtool`, else `~/.cache/glmtool`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GLMTOOL_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("glmtool");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("glmtool");
    }
    std::env::temp_dir().join("glmtool")
}

/// The model `-m` names, else `GLMTOOL_MODEL`'s; None: the demo model.
fn given_model(model: Option<&Path>) -> Option<PathBuf> {
    match model {
        Some(p) => Some(p.to_path_buf()),
        None => std::env::var_os(MODEL_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    }
}

/// Whether `-m` (or its absence) means the bundled demo model.
pub fn uses_demo(model: Option<&Path>) -> bool {
    given_model(model).is_none()
}

/// The GGUF file to load for `-m` (or its absence), converting a checkpoint to `ty` if needed.
pub fn resolve(model: Option<&Path>, ty: FileType, quiet: bool) -> Result<PathBuf> {
    let Some(given) = given_model(model) else {
        return demo_model_path();
    };
    match checkpoint_dir(&given) {
        Some(dir) => cached_conversion(&dir, ty, quiet),
        None => {
            if !given.exists() {
                bail!("{}: no such file or folder", given.display());
            }
            if !is_gguf(&given) {
                bail!(
                    "{}: not a GGUF file; give -m a GGUF file or a Hugging Face checkpoint folder \
                     (converted once, then reused), or convert it yourself with \
                     `glmtool convert DIR -o FILE.gguf`",
                    given.display()
                );
            }
            Ok(given)
        }
    }
}

/// Whether `p` starts with GGUF's magic (a file that cannot be read passes, for the loader to
/// report).
fn is_gguf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    match std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) => &magic == b"GGUF",
        Err(e) => e.kind() != std::io::ErrorKind::UnexpectedEof,
    }
}

/// The checkpoint folder that `p` names: the folder itself, or the folder of one of its files
/// (`model.safetensors`, a shard, `config.json`).
fn checkpoint_dir(p: &Path) -> Option<PathBuf> {
    if p.is_dir() {
        return Some(p.to_path_buf());
    }
    let name = p.file_name()?.to_string_lossy();
    let of_checkpoint = name.ends_with(".safetensors")
        || name == "config.json"
        || name == "model.safetensors.index.json";
    let dir = p.parent().filter(|d| d.join("config.json").is_file())?;
    of_checkpoint.then(|| dir.to_path_buf())
}

/// FNV-1a over the folder's path and each input file's name, size and modification time: a
/// changed checkpoint gets a new cache file.
fn fingerprint(dir: &Path) -> Result<u64> {
    let mut h = Fnv::new();
    let mut eat = |bytes: &[u8]| h.eat(bytes);
    // a new glmtool may convert differently: its version is part of the key
    eat(env!("CARGO_PKG_VERSION").as_bytes());
    eat(env!("GLMTOOL_LONG_VERSION").as_bytes());
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    eat(canon.to_string_lossy().as_bytes());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".safetensors") || n.ends_with(".json") || n == "tokenizer.model"
        })
        .collect();
    files.sort_by_key(|e| e.file_name());
    for e in files {
        // the file's own size and time (HF cache folders hold symlinks to blobs)
        let meta = std::fs::metadata(e.path())?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        eat(e.file_name().to_string_lossy().as_bytes());
        eat(&meta.len().to_le_bytes());
        eat(&mtime.to_le_bytes());
    }
    Ok(h.0)
}

/// The cached GGUF of checkpoint `dir` at type `ty`, converted first when missing.
fn cached_conversion(dir: &Path, ty: FileType, quiet: bool) -> Result<PathBuf> {
    let stem = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let cache = cache_dir().join("converted");
    let out = cache.join(format!(
        "{stem}-{:016x}-{}.gguf",
        fingerprint(dir)?,
        ty.name().to_lowercase()
    ));
    if verified(&out)? {
        if !quiet {
            eprintln!("using {} (converted from {})", out.display(), dir.display());
        }
        return Ok(out);
    }
    // everything is checked (config.json, the tensors, the tokenizer) before the conversion
    // is announced: a folder that is not a checkpoint gets one line saying why, nothing more
    glm_convert::convert::prepare(dir)?;
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    eprintln!(
        "{} is a Hugging Face checkpoint: converting it to {} once, into {} \
         (--type to choose another type; GLMTOOL_CACHE moves the cache)",
        dir.display(),
        ty.name(),
        out.display()
    );
    crate::output::prepare(&out);
    let pb = crate::progress::conversion_bar(quiet);
    let on_progress = crate::progress::on_conversion(&pb);
    let opts = glm_convert::ConvertOptions {
        family: None,
        policy: glm_convert::TypePolicy::of(ty),
        overwrite: true,
        cancel: Some(&crate::INTERRUPTED),
        progress: &on_progress,
    };
    // written under another name, its record first, then moved into place: a cache entry is
    // never visible without its record
    let part = part_path(&out);
    let summary = glm_convert::convert(dir, &part, &opts).with_context(|| {
        format!(
            "converting {} (the same as `glmtool convert {} -o FILE.gguf --type {}`)",
            dir.display(),
            dir.display(),
            ty.name().to_lowercase()
        )
    })?;
    pb.finish_and_clear();
    publish(&part, &out)?;
    crate::progress::print_summary(&out, &summary);
    Ok(out)
}

// ---------------------------------------------------------------- cache entry checks

/// The record kept next to a cache entry: its size and XXH3-64 at the time it was written.
fn record_path(entry: &Path) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(".check");
    PathBuf::from(name)
}

fn digest(entry: &Path) -> Result<(u64, u64)> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(entry).with_context(|| format!("reading {}", entry.display()))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", entry.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, h.digest()))
}

/// Where a cache entry is written before [`publish`] moves it into place.
fn part_path(entry: &Path) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(format!(".part{}", std::process::id()));
    PathBuf::from(name)
}

/// Records the size and checksum of the freshly written `part`, then moves it to `entry`.
fn publish(part: &Path, entry: &Path) -> Result<()> {
    let result = (|| {
        let (size, hash) = digest(part)?;
        let rec = record_path(entry);
        let mut tmp = part.as_os_str().to_owned();
        tmp.push(".check");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, format!("size {size}\nxxh3 {hash:016x}\n"))
            .and_then(|()| std::fs::rename(&tmp, &rec))
            .with_context(|| format!("writing {}", rec.display()))?;
        std::fs::rename(part, entry)
            .with_context(|| format!("moving {} to {}", part.display(), entry.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(part);
    }
    result
}

/// Whether the cache entry exists and still matches its record. A damaged one (truncated,
/// emptied, bit-flipped, or without a record) is removed with a message saying so, for the
/// caller to rebuild.
fn verified(entry: &Path) -> Result<bool> {
    if !entry.exists() {
        return Ok(false);
    }
    let rec = record_path(entry);
    let want = std::fs::read_to_string(&rec).ok().and_then(|t| {
        let mut size = None;
        let mut hash = None;
        for line in t.lines() {
            match line.split_once(' ') {
                Some(("size", v)) => size = v.parse::<u64>().ok(),
                Some(("xxh3", v)) => hash = u64::from_str_radix(v, 16).ok(),
                _ => {}
            }
        }
        Some((size?, hash?))
    });
    let problem = match want {
        None => "it has no valid record of its size and checksum".to_string(),
        Some((size, hash)) => match digest(entry) {
            Ok((s, _)) if s != size => format!("it is {s} bytes, {size} were written"),
            Ok((_, h)) if h != hash => "its checksum differs from the one recorded".to_string(),
            Ok(_) => return Ok(true),
            Err(e) => format!("{e:#}"),
        },
    };
    eprintln!(
        "cache entry {} is damaged ({problem}): rebuilding it",
        entry.display()
    );
    std::fs::remove_file(entry)
        .with_context(|| format!("removing the damaged cache entry {}", entry.display()))?;
    let _ = std::fs::remove_file(&rec);
    Ok(false)
}

// ---------------------------------------------------------------- the demo model

const CONFIG: &[u8] = include_bytes!("../../../tests/fixtures/tiny-chatglm3/config.json");
const TOKENIZER: &[u8] = include_bytes!("../../../tests/fixtures/tiny-chatglm3/tokenizer.model");
const WEIGHTS: &[u8] = include_bytes!("../../../tests/fixtures/tiny-chatglm3/model.safetensors");

/// FNV-1a over the embedded files: a new fixture gets a new cache file.
fn demo_fingerprint() -> u64 {
    let mut h = Fnv::new();
    for part in [CONFIG, TOKENIZER, WEIGHTS] {
        h.eat(part);
    }
    h.0
}

/// 64-bit FNV-1a, for cache keys.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
}

/// Path of the demo GGUF, converting it first if needed.
/// The bundled tiny demo model: the fixture checkpoint in tests/fixtures/tiny-chatglm3 is
/// embedded in the binary and converted to GGUF (f16) in the cache folder on first use, so
/// `glmtool run` works on a fresh machine with no download. Its path, converting it first if
/// needed.
pub fn demo_model_path() -> Result<PathBuf> {
    let dir = cache_dir();
    let out = dir.join(format!(
        "tiny-chatglm3-{:016x}-f16.gguf",
        demo_fingerprint()
    ));
    if verified(&out)? {
        return Ok(out);
    }
    eprintln!(
        "no -m given: preparing the bundled tiny demo model in {}",
        dir.display()
    );
    let src = dir.join(format!("tiny-chatglm3-src-{}", std::process::id()));
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    let result = (|| -> Result<()> {
        for (name, bytes) in [
            ("config.json", CONFIG),
            ("tokenizer.model", TOKENIZER),
            ("model.safetensors", WEIGHTS),
        ] {
            std::fs::write(src.join(name), bytes)
                .with_context(|| format!("writing {}", src.join(name).display()))?;
        }
        let opts = glm_convert::ConvertOptions {
            family: None,
            policy: glm_convert::TypePolicy::new(gguf::GgmlType::F16),
            overwrite: true,
            cancel: None,
            progress: &|_| {},
        };
        let part = part_path(&out);
        glm_convert::convert(&src, &part, &opts)?;
        publish(&part, &out)
    })();
    let _ = std::fs::remove_dir_all(&src);
    result?;
    Ok(out)
}
