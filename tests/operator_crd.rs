//! The generated CRD: committed copy in sync, structural schema, and its validations (ranges,
//! enums, required fields) checked by a small validator over the schema itself.

use cnnpc::operator::crd::crd_yaml;
use serde_json::{json, Value};

const COMMITTED: &str = "crds/cnnpc.io_collaborativeinferences.yaml";

fn crd() -> Value {
    let v: serde_yaml::Value = serde_yaml::from_str(&crd_yaml()).unwrap();
    serde_json::to_value(v).unwrap()
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_crd_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{COMMITTED} is out of date with src/operator/crd.rs; regenerate it with\n  \
         cargo run --quiet -- crd > {COMMITTED}"
    );
}

/// Kubernetes' structural-schema rules: every node has a type (unless it says
/// `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields`), no `$ref`, and
/// no untyped field anywhere.
fn check_structural(node: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: not an object"));
        return;
    };
    let exempt = obj.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if !exempt && !obj.get("type").is_some_and(Value::is_string) {
        errors.push(format!("{path}: no type"));
    }
    for bad in ["$ref", "definitions", "$schema"] {
        if obj.contains_key(bad) {
            errors.push(format!("{path}: has {bad}"));
        }
    }
    if obj.get("additionalProperties") == Some(&json!(true)) {
        errors.push(format!("{path}: additionalProperties true"));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(key).and_then(Value::as_array) {
            for b in list {
                if b.get("type").is_some() || b.get("properties").is_some() {
                    errors.push(format!(
                        "{path}: {key} branch declares a type or properties"
                    ));
                }
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), errors);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), errors);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        check_structural(ap, &format!("{path}{{}}"), errors);
    }
}

#[test]
fn schema_is_structural() {
    let mut errors = Vec::new();
    check_structural(&schema(), "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn crd_shape_names_and_columns() {
    let c = crd();
    assert_eq!(c["metadata"]["name"], "collaborativeinferences.cnnpc.io");
    assert_eq!(c["spec"]["scope"], "Namespaced");
    assert_eq!(c["spec"]["names"]["kind"], "CollaborativeInference");
    let short: Vec<&str> = c["spec"]["names"]["shortNames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(short, ["ci", "collab"]);
    let v = &c["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["subresources"]["status"], json!({}));
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        cols,
        ["Plan", "Predicted", "Observed", "URL", "Ready", "Age"]
    );
}

/// A minimal validator for the keywords our schema uses (CEL rules are checked for presence).
fn validate(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    let null_ok = v.is_null() && schema["nullable"] == json!(true);
    if !ok && !null_ok {
        errors.push(format!("{path}: expected {ty}"));
        return;
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            errors.push(format!("{path}: {v} not in {e:?}"));
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            let excl = schema["exclusiveMinimum"] == json!(true);
            if x < min || (excl && x == min) {
                errors.push(format!("{path}: {x} below minimum {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            if x > max {
                errors.push(format!("{path}: {x} above maximum {max}"));
            }
        }
    }
    if let (Some(min), Some(a)) = (schema["minItems"].as_u64(), v.as_array()) {
        if (a.len() as u64) < min {
            errors.push(format!("{path}: fewer than {min} items"));
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_str() {
                if !o.contains_key(r) {
                    errors.push(format!("{path}.{r}: required"));
                }
            }
        }
        for (k, child) in o {
            // The API server handles these at the root; the CRD schema does not list them.
            if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                continue;
            }
            match schema["properties"].get(k) {
                Some(s) => validate(s, child, &format!("{path}.{k}"), errors),
                None if schema["additionalProperties"].is_object() => validate(
                    &schema["additionalProperties"],
                    child,
                    &format!("{path}.{k}"),
                    errors,
                ),
                None if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) => {}
                None if ty == "object" && schema.get("properties").is_some() => {
                    errors.push(format!("{path}.{k}: unknown field"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            validate(items, x, &format!("{path}[{i}]"), errors);
        }
    }
}

fn errors_for(spec: Value) -> Vec<String> {
    let mut errors = Vec::new();
    let obj = json!({"apiVersion": "cnnpc.io/v1alpha1", "kind": "CollaborativeInference",
                     "metadata": {"name": "x"}, "spec": spec});
    validate(&schema(), &obj, "", &mut errors);
    errors
}

fn good() -> Value {
    json!({
        "model": {"url": "https://example.org/m.onnx", "sha256": "a".repeat(64)},
        "tiers": {"end": {"slowdown": 18.0, "nodeSelector": {"tier": "end"}}, "edge": {"enabled": false}},
        "links": {"endEdgeMbps": 20.0, "edgeCloudMbps": 10.0},
        "objective": {"minAccuracy": 0.95},
        "compression": {"encodings": ["int8", "int4"], "prune": true},
        "calibration": {"pages": 64},
        "replan": {"intervalSeconds": 30, "hysteresis": 0.1, "tierLossGraceSeconds": 60}
    })
}

#[test]
fn schema_accepts_a_good_spec_and_the_sample() {
    assert!(errors_for(good()).is_empty(), "{:?}", errors_for(good()));
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/collaborativeinference.yaml"),
    )
    .unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&sample).unwrap();
    let v = serde_json::to_value(v).unwrap();
    let mut errors = Vec::new();
    validate(&schema(), &v, "", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    // The sample also deserialises into the Rust type.
    let _: cnnpc::operator::crd::CollaborativeInference = serde_json::from_value(v).unwrap();
}

#[test]
fn schema_rejects_out_of_range_unknown_and_missing_values() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/objective/minAccuracy", json!(0.0), "minAccuracy"),
        ("/objective/minAccuracy", json!(1.5), "minAccuracy"),
        ("/links/endEdgeMbps", json!(0.0), "endEdgeMbps"),
        ("/links/edgeCloudMbps", json!(-3.0), "edgeCloudMbps"),
        ("/compression/encodings", json!(["int3"]), "encodings[0]"),
        ("/compression/encodings", json!([]), "encodings"),
        ("/tiers/end/slowdown", json!(0.5), "slowdown"),
        ("/replan/hysteresis", json!(2.0), "hysteresis"),
        ("/calibration/pages", json!(2), "pages"),
        ("/model/sha256", json!("xyz"), "sha256"),
        ("/tiers/end/bogus", json!(1), "bogus"),
    ];
    for (ptr, value, needle) in cases {
        let mut spec = good();
        let (parent, key) = ptr.rsplit_once('/').unwrap();
        spec.pointer_mut(parent).unwrap()[key] = value.clone();
        let errors = errors_for(spec);
        // Patterns are not evaluated by this validator: check them on the schema instead.
        if needle == "sha256" {
            let pat = schema()["properties"]["spec"]["properties"]["model"]["properties"]["sha256"]
                ["pattern"]
                .clone();
            assert_eq!(pat, "^[0-9a-f]{64}$");
            continue;
        }
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{ptr} = {value}: {errors:?}"
        );
    }
    let missing = errors_for(json!({}));
    assert!(
        missing.iter().any(|e| e.contains("spec.model: required")),
        "{missing:?}"
    );
}

#[test]
fn cel_rules_guard_the_one_of_choices() {
    let s = schema();
    let rules = |v: &Value| -> Vec<String> {
        v["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["rule"].as_str().map(str::to_string))
            .collect()
    };
    let spec = &s["properties"]["spec"]["properties"];
    assert!(rules(&spec["model"]).contains(&"has(self.url) != has(self.path)".to_string()));
    assert!(rules(&spec["model"]).contains(&"!has(self.url) || has(self.sha256)".to_string()));
    assert!(rules(&spec["objective"])
        .contains(&"has(self.minAccuracy) != has(self.maxLatencyMs)".to_string()));
}
