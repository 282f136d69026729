//! The machine's float class: which of the float kernels that candle's `gemm` and nalgebra's
//! `matrixmultiply` choose at run time this CPU gets. Within one class, every kind's output is the same
//! bytes on every machine; see the module doc of [`crate::cache`] ("Reproducibility across machines").

/// `x86_64 with AVX2+FMA`, `x86_64 without FMA`, `x86_64 with FMA, without AVX2`, or the architecture's
/// name (`aarch64`, …) where no class has been measured.
pub fn float_class() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        match (std::arch::is_x86_feature_detected!("fma"), std::arch::is_x86_feature_detected!("avx2")) {
            (true, true) => "x86_64 with AVX2+FMA",
            (false, _) => "x86_64 without FMA",
            (true, false) => "x86_64 with FMA, without AVX2",
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}
