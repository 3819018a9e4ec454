//! The bundled tiny demo model: the fixture checkpoint in tests/fixtures/tiny-chatglm3 is
//! embedded in the binary and converted to GGUF (f16) in the user's cache directory on first use,
//! so `glmtool run` works on a fresh machine with no download.

use anyhow::{Context, Result};
use std::path::PathBuf;

const CONFIG: &[u8] = include_bytes!("../../../tests/fixtures/tiny-chatglm3/config.json");
const TOKENIZER: &[u8] = include_bytes!("../../../tests/fixtures/tiny-chatglm3/tokenizer.model");
const WEIGHTS: &[u8] = include_bytes!("../../../tests/fixtures/tiny-chatglm3/model.safetensors");

/// FNV-1a over the embedded files: a new fixture gets a new cache file.
fn fingerprint() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for part in [CONFIG, TOKENIZER, WEIGHTS] {
        for &b in part {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// Path of the demo GGUF, converting it first if needed.
pub fn demo_model_path() -> Result<PathBuf> {
    let dir = crate::models::cache_dir();
    let out = dir.join(format!("tiny-chatglm3-{:016x}-f16.gguf", fingerprint()));
    if out.exists() {
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
        glm_convert::convert(&src, &out, &opts)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&src);
    result?;
    Ok(out)
}
