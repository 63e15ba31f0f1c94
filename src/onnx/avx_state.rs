//! The vector-register state tract's kernels leave behind, and clearing it.
//!
//! tract's x86 kernels use the 256/512-bit AVX registers and return without `vzeroupper`. The
//! thread then keeps the registers' upper halves "in use", and every legacy-SSE instruction
//! after that (our own code and zstd are built for baseline x86-64, so all of it) pays for
//! merging with them. Measured on a 2-core AMD EPYC (AVX-512): framing the demo's 4-of-16 stem in
//! int4 (quantisation only) took 2.5 ns per value after a tract run and 0.44 after a
//! `vzeroupper`, on the same data and buffers. The state lasts until something clears it, and a
//! thread spawned from a dirty thread inherits it, so the cost came and went with whatever had
//! run last: the "mode" the end's codec cost flipped between in profiles.
//!
//! The fix is the one libraries that mix the two settle on (oneDNN, BLIS): clear the upper
//! halves when leaving the AVX library, after every model run ([`super::verify::Runner::run`]).

/// Zeroes the upper halves of the vector registers when the CPU has AVX (one instruction, no
/// effect on values: no Rust code keeps vector registers live across a call). A no-op elsewhere.
#[inline]
pub fn clear_upper_halves() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, checked just above.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// Whether this thread's AVX upper halves are in use (XINUSE bit 2, from `xgetbv` with ECX = 1),
/// where the CPU reports it; `None` elsewhere. What the tests check after a model run.
pub fn upper_halves_in_use() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        if !std::arch::is_x86_feature_detected!("xsave")
            || !std::arch::is_x86_feature_detected!("avx")
        {
            return None;
        }
        // CPUID.(EAX=0DH, ECX=1):EAX bit 2: XGETBV with ECX = 1 (the in-use bitmap) exists.
        // SAFETY: leaf 0xD exists on every CPU with XSAVE, checked above. (`__cpuid_count` is
        // a safe fn from Rust 1.87; our rust-version, 1.85, still needs the block.)
        #[allow(unused_unsafe)]
        let leaf = unsafe { __cpuid_count(0xD, 1) };
        let xgetbv1 = leaf.eax & (1 << 2) != 0;
        if !xgetbv1 {
            return None;
        }
        // SAFETY: XSAVE and XGETBV with ECX = 1 are supported, checked above.
        let in_use = unsafe { xinuse() };
        Some(in_use & (1 << 2) != 0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xinuse() -> u64 {
    std::arch::x86_64::_xgetbv(1)
}

/// Leaves the upper halves of the vector registers in use, as tract's hand-written kernels do
/// (tests). In assembly: for compiled AVX code the compiler itself puts `vzeroupper` before
/// every return.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn dirty_upper_halves() {
    let one = 1.0f32;
    // SAFETY: only run where the CPU reports AVX (the caller checks); writes ymm0 only, which
    // is declared clobbered.
    unsafe {
        std::arch::asm!(
            "vbroadcastss ymm0, dword ptr [{p}]",
            p = in(reg) &one,
            out("xmm0") _,
            options(nostack, readonly),
        );
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn clearing_leaves_the_upper_halves_unused_after_avx_code_used_them() {
        let Some(_) = upper_halves_in_use() else {
            // Not a skip in disguise: without XINUSE the state cannot be observed (the tests
            // of `verify` and `quantise` would fail the same way). Every x86-64 CPU with
            // AVX-512 reports it.
            panic!("this CPU cannot report its AVX upper-half state (no XGETBV with ECX = 1)");
        };
        dirty_upper_halves();
        // Read at once: nothing between can clear the state (no call that might vzeroupper).
        let dirty = upper_halves_in_use();
        clear_upper_halves();
        let clean = upper_halves_in_use();
        assert_eq!((dirty, clean), (Some(true), Some(false)));
    }
}
