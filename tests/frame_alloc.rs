//! Hostile frames must be refused without allocating what they declare. A counting global
//! allocator measures the peak heap growth of each decode (one test per binary, so no other test
//! allocates concurrently). zstd's own C allocations are not counted; its one-shot decompression
//! writes straight into our buffer and allocates no window.

use cnnpc::onnx::frame::{Frame, FrameError, FrameLimits, FLAG_ZSTD, MAGIC, VERSION};
use cnnpc::planner::accuracy::WireEncoding;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), SeqCst) + l.size();
        PEAK.fetch_max(now, SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), SeqCst);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak heap growth while running `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(SeqCst);
    PEAK.store(base, SeqCst);
    let out = f();
    (out, PEAK.load(SeqCst) - base)
}

fn header(enc: u8, flags: u8, dims: &[u32], axis: u8, params: u32, payload: u64) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&[VERSION, enc, flags, dims.len() as u8, axis]);
    h.extend_from_slice(&params.to_le_bytes());
    h.extend_from_slice(&payload.to_le_bytes());
    for d in dims {
        h.extend_from_slice(&d.to_le_bytes());
    }
    h
}

#[test]
fn hostile_frames_allocate_little() {
    let limits = FrameLimits::default();
    const SMALL: usize = 4 << 10;

    // Absurd shape, few bytes.
    let h = header(0, 0, &[u32::MAX; 4], 1, 0, 16);
    let (r, peak) = peak_during(|| Frame::decode(&h, &limits));
    assert!(matches!(
        r,
        Err(FrameError::TooLarge {
            field: "element count",
            ..
        })
    ));
    assert!(peak < SMALL, "peak {peak}");

    // 1 GiB declared payload for a shape that fits: refused on the payload length.
    let mut h = header(0, 0, &[1, 1 << 28], 1, 0, 1 << 30);
    h.extend_from_slice(&[0; 64]);
    let (r, peak) = peak_during(|| Frame::decode(&h, &limits));
    assert!(matches!(
        r,
        Err(FrameError::TooLarge {
            field: "payload length",
            ..
        })
    ));
    assert!(peak < SMALL, "peak {peak}");

    // Int8 frame declaring 4 Gi channels of parameters: refused before reading them.
    let h = header(2, 0, &[0, u32::MAX], 1, u32::MAX, 0);
    let (r, peak) = peak_during(|| Frame::decode(&h, &limits));
    assert!(matches!(
        r,
        Err(FrameError::TooLarge {
            field: "param count",
            ..
        })
    ));
    assert!(peak < SMALL, "peak {peak}");

    // zstd bomb: 16 MiB of zeros in a ~1 KiB payload, receiver allows 1 MiB decompressed.
    let zeros = vec![0u8; 16 << 20];
    let z = zstd::bulk::compress(&zeros, 1).unwrap();
    drop(zeros);
    let mut bomb = header(0, FLAG_ZSTD, &[1, 4 << 20], 1, 0, z.len() as u64);
    bomb.extend_from_slice(&z);
    let tight = FrameLimits {
        max_decompressed_bytes: 1 << 20,
        ..limits
    };
    let (r, peak) = peak_during(|| Frame::decode(&bomb, &tight));
    assert!(matches!(
        r,
        Err(FrameError::TooLarge {
            field: "decompressed payload length",
            ..
        })
    ));
    assert!(peak < SMALL, "peak {peak}");

    // A bomb behind an honest first zstd frame: to_f32 stops at the 32 declared bytes.
    let honest = zstd::bulk::compress(&[7u8; 32], 3).unwrap();
    let mut payload = honest.clone();
    payload.extend_from_slice(&z);
    let mut sneaky = header(0, FLAG_ZSTD, &[1, 8], 1, 0, payload.len() as u64);
    sneaky.extend_from_slice(&payload);
    let f = Frame::decode(&sneaky, &limits).unwrap();
    let (r, peak) = peak_during(|| f.to_f32());
    assert!(matches!(r, Err(FrameError::Zstd(_))), "{r:?}");
    assert!(peak < SMALL, "peak {peak}");

    // Control: a legitimate 1 MiB-element frame does allocate its size, so the counter works.
    let v = vec![1.0f32; 1 << 20];
    let bytes = Frame::from_tensor(&v, &[1, 1 << 20], 1, WireEncoding::F32, Some(1))
        .unwrap()
        .encode();
    let (r, peak) = peak_during(|| Frame::decode(&bytes, &limits).and_then(|f| f.to_f32()));
    assert_eq!(r.unwrap(), v);
    assert!(peak >= 4 << 20, "peak {peak}");
}
