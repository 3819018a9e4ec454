//! Entry point of the `checkpoint_inputs` fuzz target (`fuzz/`, cargo-fuzz), here so that a
//! normal `cargo test` replays the committed corpus through exactly the same code
//! (`tests/fuzz_corpus.rs`). It takes arbitrary bytes and must return without panicking,
//! hanging or allocating wildly, whatever they are.

use std::path::Path;

/// The converter's input side: everything `convert` reads and checks before writing.
///
/// `data[0] % 4` picks the file that the rest of `data` replaces in a copy of the valid
/// checkpoint `fixture` (config.json, tokenizer.model, model.safetensors, or an added
/// model.safetensors.index.json); `scratch` is an empty directory the function may use.
/// The other files are links to the fixture's, so a run costs what parsing costs. Returns
/// whether the checkpoint was accepted.
pub fn checkpoint_inputs(data: &[u8], fixture: &Path, scratch: &Path) -> bool {
    let Some((&which, content)) = data.split_first() else {
        return false;
    };
    const FILES: [&str; 3] = ["config.json", "tokenizer.model", "model.safetensors"];
    let dir = scratch.join("ckpt");
    let index = dir.join("model.safetensors.index.json");
    // The directory holds links to the fixture's files between runs; only the fuzzed file is
    // swapped in and out (never written through a link: that would overwrite the fixture).
    if !dir.is_dir() {
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::create_dir(&dir).is_err()
            || !FILES.iter().all(|n| link(&fixture.join(n), &dir.join(n)))
        {
            let _ = std::fs::remove_dir_all(&dir);
            return false;
        }
    }
    let which = (which % 4) as usize;
    let target = match FILES.get(which) {
        Some(name) => dir.join(name),
        None => index.clone(),
    };
    let _ = std::fs::remove_file(&target);
    let accepted = std::fs::write(&target, content).is_ok() && check(&dir);
    let restored = std::fs::remove_file(&target).is_ok()
        && FILES
            .get(which)
            .is_none_or(|name| link(&fixture.join(name), &target));
    if !restored {
        // start from scratch next time
        let _ = std::fs::remove_dir_all(&dir);
    }
    accepted
}

/// Everything `convert` does with the checkpoint in `dir` before writing.
fn check(dir: &Path) -> bool {
    let Ok(p) = crate::convert::prepare(dir) else {
        return false;
    };
    let policy = crate::TypePolicy::new(gguf::GgmlType::Q8_0);
    let _ = crate::convert::model_metadata(&p.cfg, p.family, &p.vocab, &policy);
    p.expected
        .iter()
        .all(|(_, hf, _)| p.ckpt.get(hf).is_some_and(|t| t.len > 0))
}

#[cfg(unix)]
fn link(from: &Path, to: &Path) -> bool {
    std::os::unix::fs::symlink(from, to).is_ok()
}

#[cfg(not(unix))]
fn link(from: &Path, to: &Path) -> bool {
    std::fs::copy(from, to).is_ok()
}
