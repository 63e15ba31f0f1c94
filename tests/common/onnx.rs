//! Inputs and names for the ONNX surgery tests on the generated models.

use cnnpc::onnx::calibration::Batch;
use cnnpc::testkit::models as testmodels;

/// `n` generated inputs for the test models, as a calibration batch.
pub fn batch(seed: u64, n: usize) -> Batch {
    let a = testmodels::input(seed, n);
    Batch {
        shape: a.shape().to_vec(),
        data: a.iter().copied().collect(),
        labels: None,
    }
}

pub fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
