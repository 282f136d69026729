//! `device = "cpu" | "cuda"`: where a learned stage's candle networks train and run.
//!
//! - `cpu` (the default) is the machine-independent path: the products of [`crate::matmul`], the
//!   parameter ops of [`crate::param_ops`] and the cnn-s kernel for the behavioural term, so the bytes
//!   are those the golden test pins.
//! - `cuda` is GPU 0, in a build with the `cuda` cargo feature: candle's CUDA ops (cuBLAS products),
//!   and the behavioural term through the cnn-s graph of [`crate::nn::graph`] on the GPU. Its results
//!   agree with the CPU's within float tolerance, not to the bit, and the device joins the stage's key.
//!
//! A `cuda` request in a build without the feature is refused while the pipeline file is checked,
//! before any stage runs ([`check`]). In a `cuda` build, a machine without a usable GPU is found when
//! the stage starts ([`open_name`]): the check cannot open the GPU itself, because a Slurm run checks the
//! file on a login node that may have none.

use std::sync::OnceLock;

use candle_core::Device;
use wspace_stage_api::{choice_enum, params, Params, StageError};

choice_enum! {
    /// `device`: where a stage's candle networks run.
    pub enum DeviceName { Cpu = "cpu", Cuda = "cuda" }
}

params! {
    pub DEVICE = "device": choice(DeviceName) = "cpu", "where the stage's networks train and run: cpu, or cuda (GPU 0; a build with the `cuda` cargo feature)";
}

/// Whether this build can run CUDA stages.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Refuses `device = "cuda"` in a build without the `cuda` feature (for [`StageKind::validate`]).
///
/// [`StageKind::validate`]: wspace_stage_api::StageKind::validate
pub fn check(p: Params) -> Result<DeviceName, StageError> {
    built(p.choice::<DeviceName>(&DEVICE)?)
}

/// `name`, unless it is `cuda` and this build has no CUDA.
pub fn built(name: DeviceName) -> Result<DeviceName, StageError> {
    if name == DeviceName::Cuda && !CUDA_BUILT {
        return Err(StageError::param(
            "device",
            "= \"cuda\", but this wspace was built without the `cuda` cargo feature: build it with \
         `cargo build --release --features cuda` (the CUDA toolkit's nvcc is needed to build; see the README's GPU section)",
        ));
    }
    Ok(name)
}

/// The candle device `name` names: for `cuda`, GPU 0, opened once per process, so that the tensors of
/// every model a stage loads or builds share one device (candle refuses to mix two handles of one GPU).
pub fn open_name(name: DeviceName) -> Result<Device, StageError> {
    static GPU: OnceLock<Result<Device, String>> = OnceLock::new();
    match built(name)? {
        DeviceName::Cpu => Ok(Device::Cpu),
        DeviceName::Cuda => GPU
            .get_or_init(|| Device::new_cuda(0).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| StageError::param("device", format!("= \"cuda\": no usable CUDA GPU (device 0) on this machine: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use wspace_stage_api::{Param, Value};

    use super::*;

    #[test]
    fn cuda_is_refused_in_a_build_without_the_feature_and_cpu_opens() {
        let mut values = Param::defaults(&[DEVICE]);
        assert!(open_name(check(Params(&values)).unwrap()).unwrap().is_cpu());
        values.insert("device".into(), Value::Str("cuda".into()));
        let got = check(Params(&values));
        if CUDA_BUILT {
            // (Whether this machine has a GPU is `open_name`'s question, asked when a stage starts.)
            assert_eq!(got.unwrap(), DeviceName::Cuda);
        } else {
            let msg = got.unwrap_err().to_string();
            assert!(msg.contains("device") && msg.contains("--features cuda"), "{msg}");
        }
    }
}
