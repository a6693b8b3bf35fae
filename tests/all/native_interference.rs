//! Native vector code in the same process must not slow the guest down. Native AVX kernels
//! (tract's x86_64 assembly, an embedder's own code) can leave the upper halves of the vector
//! registers dirty; cranelift's legacy-SSE encodings then paid a transition penalty on every
//! instruction: SqueezeNet calls took 5.4 s instead of 45 ms after native tract had run on the
//! same thread. The host clears the state where it enters the guest.

#[cfg(target_arch = "x86_64")]
#[test]
fn native_avx_work_between_inferences_does_not_slow_the_guest() {
    use edgeinfer_oip::{Datatype, Tensor};
    use edgeinfer_runtime::LimitOverrides;

    use crate::common::*;

    if !std::arch::is_x86_feature_detected!("avx") {
        eprintln!("SKIPPED native_avx_work_between_inferences_does_not_slow_the_guest: no AVX on this CPU");
        return;
    }
    let data = std::fs::read(fixture("squeezenet_input.bin")).expect("input");
    let input =
        Tensor { name: "data_0".into(), datatype: Datatype::Fp32, shape: vec![1, 3, 224, 224], data: data.into() };
    // 45 ms is the normal time; the penalty made it seconds. 2 s leaves 40x for a slow machine.
    let limits = LimitOverrides { timeout_ms: Some(2000), ..LimitOverrides::default() };
    let model = &fixtures().squeezenet;
    for round in 0..12 {
        dirty_upper_vector_state();
        let outcome = model.infer(vec![input.clone()], &[], limits);
        assert!(outcome.is_ok(), "round {round} after native AVX work: {:?}", outcome.err());
    }
}

/// Leaves the upper halves of vector registers non-zero and dirty, as native AVX / AVX-512
/// kernels that skip `vzeroupper` do.
#[cfg(target_arch = "x86_64")]
fn dirty_upper_vector_state() {
    // SAFETY: each function only runs when the CPU has the feature it is compiled for, and it
    // only writes registers it declares clobbered.
    unsafe {
        if std::arch::is_x86_feature_detected!("avx512f") {
            dirty_zmm();
        }
        dirty_ymm();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dirty_ymm() {
    // SAFETY: AVX is enabled for this function; ymm8 is declared clobbered.
    unsafe {
        std::arch::asm!(
            "vcmpps ymm0, ymm0, ymm0, 0xf",
            "vmovaps ymm1, ymm0", "vmovaps ymm2, ymm0", "vmovaps ymm3, ymm0", "vmovaps ymm4, ymm0",
            "vmovaps ymm5, ymm0", "vmovaps ymm6, ymm0", "vmovaps ymm7, ymm0", "vmovaps ymm8, ymm0",
            "vmovaps ymm9, ymm0", "vmovaps ymm10, ymm0", "vmovaps ymm11, ymm0", "vmovaps ymm12, ymm0",
            "vmovaps ymm13, ymm0", "vmovaps ymm14, ymm0", "vmovaps ymm15, ymm0",
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _,
            out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        )
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dirty_zmm() {
    // SAFETY: AVX-512F is enabled for this function; zmm9 is declared clobbered.
    unsafe {
        std::arch::asm!(
            "vpternlogd zmm0, zmm0, zmm0, 0xff",
            "vmovaps zmm1, zmm0", "vmovaps zmm2, zmm0", "vmovaps zmm3, zmm0", "vmovaps zmm4, zmm0",
            "vmovaps zmm5, zmm0", "vmovaps zmm6, zmm0", "vmovaps zmm7, zmm0", "vmovaps zmm8, zmm0",
            "vmovaps zmm9, zmm0", "vmovaps zmm10, zmm0", "vmovaps zmm11, zmm0", "vmovaps zmm12, zmm0",
            "vmovaps zmm13, zmm0", "vmovaps zmm14, zmm0", "vmovaps zmm15, zmm0",
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _,
            out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
        )
    };
}
