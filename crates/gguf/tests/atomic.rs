//! AtomicFile against outputs that must not be replaced: non-regular files, the inputs
//! themselves (by path, symbolic link or hard link), and a file that appears between the
//! "exists" check and the final move.

use gguf::{AtomicFile, GgufError};
use std::io::Write;
use std::path::Path;

fn no_temp_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
}

#[cfg(unix)]
fn is_fifo(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

#[cfg(unix)]
#[test]
fn force_onto_a_fifo_is_refused_and_the_fifo_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.gguf");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    for overwrite in [true, false] {
        let err = AtomicFile::create(&fifo, overwrite).err().expect("refused");
        let text = err.to_string();
        assert!(
            matches!(err, GgufError::NotRegular { .. }),
            "overwrite {overwrite}: {text}"
        );
        assert!(
            text.contains("out.gguf") && text.contains("exists and is not a regular file"),
            "{text}"
        );
        assert!(text.contains("a FIFO"), "{text}");
    }
    assert!(is_fifo(&fifo));
    assert!(no_temp_files(dir.path()));
}

#[cfg(unix)]
#[test]
fn force_onto_a_character_device_is_refused() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    // a private copy of /dev/null (major 1, minor 3): harmless if the check were missing
    let null = dir.path().join("null");
    let made = std::process::Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("skipped: mknod needs root (CAP_MKNOD)");
        return;
    }
    let err = AtomicFile::create(&null, true).err().expect("refused");
    assert!(err.to_string().contains("a character device"), "{err}");
    assert!(std::fs::symlink_metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());
    // and through a symbolic link to it
    let link = dir.path().join("link.gguf");
    std::os::unix::fs::symlink(&null, &link).unwrap();
    let err = AtomicFile::create(&link, true).err().expect("refused");
    assert!(matches!(err, GgufError::NotRegular { .. }), "{err}");
    assert!(no_temp_files(dir.path()));
}

#[test]
fn force_onto_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("out.gguf");
    std::fs::create_dir(&sub).unwrap();
    let err = AtomicFile::create(&sub, true).err().expect("refused");
    assert!(err.to_string().contains("a directory"), "{err}");
    assert!(sub.is_dir());
}

#[test]
fn the_output_may_not_be_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.gguf");
    std::fs::write(&input, b"the input").unwrap();
    let mut names = vec![input.clone()];
    #[cfg(unix)]
    {
        let sym = dir.path().join("sym.gguf");
        std::os::unix::fs::symlink(&input, &sym).unwrap();
        names.push(sym);
    }
    let hard = dir.path().join("hard.gguf");
    if std::fs::hard_link(&input, &hard).is_ok() {
        names.push(hard);
    }
    for out in &names {
        for overwrite in [true, false] {
            let err = AtomicFile::create_from(out, overwrite, &[Path::new("/nonexistent"), &input])
                .err()
                .expect("refused");
            let text = err.to_string();
            assert!(matches!(err, GgufError::SameAsInput { .. }), "{text}");
            assert!(
                text.contains("is the input file") && text.contains("a.gguf"),
                "{text}"
            );
        }
    }
    assert_eq!(std::fs::read(&input).unwrap(), b"the input");
    // another existing file is replaced with --force
    let other = dir.path().join("b.gguf");
    std::fs::write(&other, b"old").unwrap();
    let mut f = AtomicFile::create_from(&other, true, &[&input]).unwrap();
    f.write_all(b"new").unwrap();
    assert_eq!(f.commit().unwrap(), 3);
    assert_eq!(std::fs::read(&other).unwrap(), b"new");
    assert!(no_temp_files(dir.path()));
}

#[test]
fn an_input_linked_at_the_output_after_create_is_refused_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.gguf");
    std::fs::write(&input, b"the input").unwrap();
    let out = dir.path().join("out.gguf");
    let mut f = AtomicFile::create_from(&out, true, &[&input]).unwrap();
    f.write_all(b"output").unwrap();
    std::fs::hard_link(&input, &out).unwrap();
    let err = f.commit().expect_err("refused");
    assert!(matches!(err, GgufError::SameAsInput { .. }), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), b"the input");
    assert!(no_temp_files(dir.path()));
}

#[test]
fn without_force_a_file_that_appears_before_commit_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    // two writers of one output, both past the "exists" check
    let mut a = AtomicFile::create(&out, false).unwrap();
    let mut b = AtomicFile::create(&out, false).unwrap();
    assert_ne!(a.tmp_path(), b.tmp_path());
    a.write_all(b"first").unwrap();
    b.write_all(b"second").unwrap();
    assert_eq!(a.commit().unwrap(), 5);
    let err = b.commit().expect_err("the second must fail");
    assert!(matches!(err, GgufError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"first");
    assert!(no_temp_files(dir.path()));
}

#[test]
fn concurrent_writers_without_force_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let barrier = std::sync::Barrier::new(8);
    let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8u8)
            .map(|i| {
                let (out, barrier) = (&out, &barrier);
                s.spawn(move || {
                    let mut f = AtomicFile::create(out, false).map_err(|e| e.to_string())?;
                    f.write_all(&[i; 64]).unwrap();
                    barrier.wait();
                    f.commit().map_err(|e| e.to_string())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.contains("already exists"), "{r}");
    }
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), 64);
    assert!(bytes.iter().all(|&b| b == bytes[0]));
    assert!(no_temp_files(dir.path()));
}

#[cfg(unix)]
#[test]
fn a_planted_link_at_a_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let out = dir.path().join("out.gguf");
    // links at the first temporary names this process could pick
    for n in 0..64 {
        let name = format!(".out.gguf.{}-{n}.tmp", std::process::id());
        let _ = std::os::unix::fs::symlink(&victim, dir.path().join(name));
    }
    let mut f = AtomicFile::create(&out, false).unwrap();
    f.write_all(b"model").unwrap();
    f.commit().unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert_eq!(std::fs::read(&out).unwrap(), b"model");
}
