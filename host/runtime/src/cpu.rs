//! CPU state the host resets before it enters guest code.
//!
//! Native vector code in the same process (tract's x86_64 assembly kernels, an embedder's
//! own AVX code) may leave the upper halves of the vector registers dirty. Cranelift emits
//! some legacy-SSE encodings, and on CPUs that track that state SSE instructions then pay a
//! transition penalty or a false dependency each: SqueezeNet calls were measured at 5.4 s
//! instead of 45 ms after native tract ran on the same thread. `vzeroupper` before entering
//! the guest clears the state; it costs about a cycle.

/// Clears the upper halves of the vector registers when the CPU has AVX; a no-op elsewhere.
#[inline]
pub(crate) fn clean_vector_state_for_guest() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: only reached on CPUs with AVX, which `vzeroupper` needs.
        unsafe { vzeroupper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn vzeroupper() {
    // SAFETY: AVX is enabled for this function. `vzeroupper` zeroes bits 128 and up of the
    // vector registers, which the host code around it (compiled for SSE) never holds values in.
    unsafe { std::arch::asm!("vzeroupper", options(nomem, nostack, preserves_flags)) };
}
