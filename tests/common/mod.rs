//! Test support shared by the integration tests (`mod common;`): the real helm, YAML documents,
//! Kubernetes label selectors, and the chart's values.
#![allow(dead_code)]

pub mod helm;
pub mod k8s;
pub mod onnx;
pub mod planner;
pub mod plans;
pub mod prom;
pub mod shard;

use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every document of a multi-document YAML text, as JSON values (empty documents dropped).
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}
