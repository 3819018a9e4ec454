//! Metadata costs memory in proportion to the file: a hostile file full of tiny array elements
//! must not turn into gigabytes of per-element values (it used to cost ~32 bytes per byte:
//! 713 MB of heap for this 32.5 MB file; now about 55 MB).

use std::io::Write;

fn key(w: &mut impl Write, k: &str, ty: u32) {
    w.write_all(&(k.len() as u64).to_le_bytes()).unwrap();
    w.write_all(k.as_bytes()).unwrap();
    w.write_all(&ty.to_le_bytes()).unwrap();
}

/// The process's peak resident memory (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn metadata_arrays_cost_about_their_file_size() {
    let Some(start) = peak_rss() else {
        eprintln!("skipping: no /proc/self/status (not Linux)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big-arrays.gguf");
    // written piece by piece, so the test itself does not hold the file in memory
    let mut w = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    w.write_all(b"GGUF").unwrap();
    w.write_all(&3u32.to_le_bytes()).unwrap();
    w.write_all(&0u64.to_le_bytes()).unwrap(); // tensors
    w.write_all(&4u64.to_le_bytes()).unwrap(); // keys
    let n8 = 16 << 20;
    key(&mut w, "a.u8", 9);
    w.write_all(&0u32.to_le_bytes()).unwrap();
    w.write_all(&(n8 as u64).to_le_bytes()).unwrap();
    w.write_all(&vec![7u8; n8]).unwrap();
    let nb = 4 << 20;
    key(&mut w, "a.bool", 9);
    w.write_all(&7u32.to_le_bytes()).unwrap();
    w.write_all(&(nb as u64).to_le_bytes()).unwrap();
    w.write_all(&vec![1u8; nb]).unwrap();
    let ns = 1 << 20;
    key(&mut w, "a.str", 9);
    w.write_all(&8u32.to_le_bytes()).unwrap();
    w.write_all(&(ns as u64).to_le_bytes()).unwrap();
    for _ in 0..ns {
        w.write_all(&0u64.to_le_bytes()).unwrap();
    }
    let nn = 1 << 18;
    key(&mut w, "a.nested", 9);
    w.write_all(&9u32.to_le_bytes()).unwrap();
    w.write_all(&(nn as u64).to_le_bytes()).unwrap();
    for _ in 0..nn {
        w.write_all(&4u32.to_le_bytes()).unwrap();
        w.write_all(&0u64.to_le_bytes()).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let size = std::fs::metadata(&p).unwrap().len();

    let before = peak_rss().unwrap().max(start);
    let f = gguf::GgufFile::open(&p).unwrap();
    let used = peak_rss().unwrap().saturating_sub(before);
    eprintln!("opening a {size}-byte file raised the peak RSS by {used} bytes");
    assert_eq!(f.get("a.u8").and_then(|x| x.as_array()).unwrap().len(), n8);
    assert_eq!(
        f.get("a.nested").and_then(|x| x.as_array()).unwrap().len(),
        nn
    );
    // the mapped file itself (read once) plus values: u8/bool 1 byte each, a string 24 bytes
    // for >= 8 in the file, a nested array 32 for >= 12
    assert!(
        used <= 4 * size,
        "opening a {size}-byte file raised the peak RSS by {used} bytes"
    );
}
