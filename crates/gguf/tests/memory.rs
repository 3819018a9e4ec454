//! Metadata costs memory in proportion to the file: a hostile file full of tiny array elements
//! must not turn into gigabytes of per-element values (it used to cost ~32 bytes per byte).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn key(v: &mut Vec<u8>, k: &str, ty: u32) {
    v.extend((k.len() as u64).to_le_bytes());
    v.extend(k.as_bytes());
    v.extend(ty.to_le_bytes());
}

#[test]
fn metadata_arrays_cost_about_their_file_size() {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(0u64.to_le_bytes()); // tensors
    v.extend(4u64.to_le_bytes()); // keys
    let n8 = 16 << 20;
    key(&mut v, "a.u8", 9);
    v.extend(0u32.to_le_bytes());
    v.extend((n8 as u64).to_le_bytes());
    v.resize(v.len() + n8, 7);
    let nb = 4 << 20;
    key(&mut v, "a.bool", 9);
    v.extend(7u32.to_le_bytes());
    v.extend((nb as u64).to_le_bytes());
    v.resize(v.len() + nb, 1);
    let ns = 1 << 20;
    key(&mut v, "a.str", 9);
    v.extend(8u32.to_le_bytes());
    v.extend((ns as u64).to_le_bytes());
    for _ in 0..ns {
        v.extend(0u64.to_le_bytes());
    }
    let nn = 1 << 18;
    key(&mut v, "a.nested", 9);
    v.extend(9u32.to_le_bytes());
    v.extend((nn as u64).to_le_bytes());
    for _ in 0..nn {
        v.extend(4u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
    }
    let size = v.len();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big-arrays.gguf");
    std::fs::File::create(&p).unwrap().write_all(&v).unwrap();
    drop(v);

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let f = gguf::GgufFile::open(&p).unwrap();
    let used = PEAK.load(Ordering::Relaxed) - before;
    eprintln!("opening a {size}-byte file took {used} bytes of heap");
    assert_eq!(f.get("a.u8").and_then(|x| x.as_array()).unwrap().len(), n8);
    assert_eq!(
        f.get("a.nested").and_then(|x| x.as_array()).unwrap().len(),
        nn
    );
    // u8/bool: 1 byte each; a string: 24 bytes for >= 8 in the file; a nested array: 32 for >= 12.
    assert!(
        used <= 3 * size + (1 << 20),
        "opening a {size}-byte file took {used} bytes of heap"
    );
}
