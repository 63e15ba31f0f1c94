//! Packaging: renders the Helm chart in `charts/cnnpc` without a `helm` binary (with the Go
//! template subset in [`template`]), and derives the plain `manifests/` from it.
//!
//! Used by `tests/chart.rs` (the chart renders to valid objects for default and non-default
//! values), `tests/manifests.rs` (`manifests/` is exactly the default render) and
//! `cargo run --example render_chart` (writes `manifests/`).
pub mod template;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use template::{merge_values, Templates};

/// The release `manifests/` is rendered as: `helm install cnnpc charts/cnnpc -n cnnpc-system`.
pub const MANIFESTS_RELEASE: &str = "cnnpc";
pub const MANIFESTS_NAMESPACE: &str = "cnnpc-system";

/// A loaded chart: metadata, default values, parsed templates and the files `.Files.Get` reads.
pub struct Chart {
    pub dir: PathBuf,
    /// `Chart.yaml` as written.
    pub metadata: Value,
    /// `values.yaml`.
    pub values: Value,
    templates: Templates,
    /// Template files that produce manifests (not `_*` partials, not `NOTES.txt`), sorted.
    manifest_templates: Vec<String>,
}

/// One rendered template file.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Path inside the chart, e.g. `templates/deployment.yaml`.
    pub template: String,
    pub text: String,
}

impl Rendered {
    /// The non-empty YAML documents of this file.
    pub fn documents(&self) -> Result<Vec<Value>> {
        parse_documents(&self.text).with_context(|| format!("{} is not valid YAML", self.template))
    }
}

/// Parses a multi-document YAML stream, skipping empty documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = <serde_yaml::Value as serde::Deserialize>::deserialize(de)?;
        let v: Value = serde_json::to_value(v)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(serde_json::to_value(v)?)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl Chart {
    pub fn load(dir: impl AsRef<Path>) -> Result<Chart> {
        let dir = dir.as_ref().to_path_buf();
        let metadata = read_yaml(&dir.join("Chart.yaml"))?;
        let values = read_yaml(&dir.join("values.yaml"))?;
        let mut files = Vec::new();
        walk(&dir, &mut files)?;
        files.sort();
        let mut templates = Templates::new();
        let mut manifest_templates = Vec::new();
        for path in files {
            let rel = path
                .strip_prefix(&dir)
                .expect("walked under dir")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if let Some(name) = rel.strip_prefix("templates/") {
                templates.add(&rel, &text)?;
                let partial = name.rsplit('/').next().is_some_and(|f| f.starts_with('_'));
                if !partial && name != "NOTES.txt" {
                    manifest_templates.push(rel);
                }
            } else {
                templates.add_file(&rel, text);
            }
        }
        Ok(Chart {
            dir,
            metadata,
            values,
            templates,
            manifest_templates,
        })
    }

    /// The chart's values with `overrides` merged in, as `helm --values` would.
    pub fn values_with(&self, overrides: &Value) -> Value {
        let mut v = self.values.clone();
        merge_values(&mut v, overrides);
        v
    }

    fn context(&self, release: &str, namespace: &str, values: Value, template: &str) -> Value {
        let meta = |k: &str| self.metadata.get(k).cloned().unwrap_or(Value::Null);
        json!({
            "Values": values,
            "Release": {
                "Name": release, "Namespace": namespace, "Service": "Helm",
                "IsInstall": true, "IsUpgrade": false, "Revision": 1,
            },
            "Chart": {
                "Name": meta("name"), "Version": meta("version"),
                "AppVersion": meta("appVersion"), "Description": meta("description"),
            },
            "Template": {"Name": format!("{}/{template}", meta("name").as_str().unwrap_or("")),
                         "BasePath": format!("{}/templates", meta("name").as_str().unwrap_or(""))},
        })
    }

    /// Renders every manifest template; files that render to whitespace only are left out,
    /// as Helm leaves them out.
    pub fn render(
        &self,
        release: &str,
        namespace: &str,
        overrides: &Value,
    ) -> Result<Vec<Rendered>> {
        let values = self.values_with(overrides);
        let mut out = Vec::new();
        for t in &self.manifest_templates {
            let ctx = self.context(release, namespace, values.clone(), t);
            let text = self.templates.render(t, &ctx)?;
            if !text.trim().is_empty() {
                out.push(Rendered {
                    template: t.clone(),
                    text,
                });
            }
        }
        Ok(out)
    }

    /// `templates/NOTES.txt`, rendered.
    pub fn notes(&self, release: &str, namespace: &str, overrides: &Value) -> Result<String> {
        let ctx = self.context(
            release,
            namespace,
            self.values_with(overrides),
            "templates/NOTES.txt",
        );
        self.templates.render("templates/NOTES.txt", &ctx)
    }

    /// The CRD files in the chart's `crds/`, by file name.
    pub fn crds(&self) -> Result<Vec<(String, String)>> {
        let dir = self.dir.join("crds");
        let mut out = Vec::new();
        if dir.is_dir() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    let name = path
                        .file_name()
                        .expect("a file")
                        .to_string_lossy()
                        .to_string();
                    out.push((name, std::fs::read_to_string(&path)?));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Helm's install order by kind (`helm template` prints documents in this order too); kinds not
/// listed go last.
pub fn install_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicaSet",
        "Deployment",
        "StatefulSet",
        "Job",
        "CronJob",
        "Ingress",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

const GENERATED: &str = "# Generated from charts/cnnpc with default values by `make manifests`\n\
# (cargo run --example render_chart). Do not edit: tests/manifests.rs fails when this drifts.\n";

/// The plain-YAML install in `manifests/`: file name → content, in `kubectl apply -f manifests/`
/// order (it applies a directory's files in name order): the namespace, the CRDs, then the
/// chart rendered with default values, documents in Helm's install order.
pub fn plain_manifests(chart: &Chart) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    files.push((
        "00-namespace.yaml".to_string(),
        format!(
            "{GENERATED}apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {MANIFESTS_NAMESPACE}\n  labels:\n    app.kubernetes.io/name: cnnpc\n    # The controller meets the restricted Pod Security Standard; enforce it here.\n    pod-security.kubernetes.io/enforce: restricted\n"
        ),
    ));
    let crds = chart.crds()?;
    if !crds.is_empty() {
        let mut text = GENERATED.to_string();
        for (name, body) in crds {
            text.push_str(&format!("---\n# Source: cnnpc/crds/{name}\n"));
            text.push_str(body.trim_start_matches("---\n").trim_end());
            text.push('\n');
        }
        files.push(("01-crds.yaml".to_string(), text));
    }
    let mut docs: Vec<(usize, String, String)> = Vec::new();
    for r in chart.render(MANIFESTS_RELEASE, MANIFESTS_NAMESPACE, &Value::Null)? {
        for (i, doc) in split_documents(&r.text).into_iter().enumerate() {
            let parsed = parse_documents(&doc)?;
            let [obj] = parsed.as_slice() else {
                bail!("{}: document {i} is not one object", r.template);
            };
            let kind = obj
                .get("kind")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{}: document {i} has no kind", r.template))?;
            docs.push((install_rank(kind), r.template.clone(), doc));
        }
    }
    // A stable sort: within a kind, template file order (as Helm).
    docs.sort_by_key(|(rank, _, _)| *rank);
    let mut text = GENERATED.to_string();
    for (_, template, doc) in docs {
        text.push_str(&format!(
            "---\n# Source: cnnpc/{template}\n{}\n",
            doc.trim()
        ));
    }
    files.push(("02-cnnpc.yaml".to_string(), text));
    Ok(files)
}

/// Splits a rendered file on `---` lines into its non-blank documents' text.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().expect("never empty");
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// The README's CRD reference section lies between these markers.
pub const CRD_REFERENCE_BEGIN: &str = "<!-- CRD-REFERENCE:BEGIN";
pub const CRD_REFERENCE_END: &str = "<!-- CRD-REFERENCE:END -->";

/// A Markdown reference of a CRD's fields, generated from its OpenAPI schema: one table per
/// served version, one row per field (`spec.model.url`), with its type, whether it is required,
/// and its description.
pub fn crd_reference(crd_yaml: &str) -> Result<String> {
    let docs = parse_documents(crd_yaml)?;
    let crd = docs.first().ok_or_else(|| anyhow!("empty CRD file"))?;
    if crd["kind"] != "CustomResourceDefinition" {
        bail!("not a CustomResourceDefinition: {}", crd["kind"]);
    }
    let group = crd["spec"]["group"].as_str().unwrap_or("");
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("");
    let mut out = String::new();
    for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("");
        out.push_str(&format!(
            "#### `{kind}` ({group}/{name})\n\n| field | type | required | description |\n|---|---|---|---|\n"
        ));
        let schema = &v["schema"]["openAPIV3Schema"];
        for top in ["spec", "status"] {
            let required = schema["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == top));
            if let Some(s) = schema["properties"].get(top) {
                fields(top, s, required, &mut out);
            }
        }
        out.push('\n');
    }
    Ok(out)
}

fn type_of(s: &Value) -> String {
    if s["x-kubernetes-int-or-string"] == true {
        return "int or string".into();
    }
    if s["x-kubernetes-preserve-unknown-fields"] == true && s["properties"].is_null() {
        return "object (free-form)".into();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s[key].as_array() {
            if s["type"].is_null() {
                let names: Vec<String> = alts.iter().map(type_of).collect();
                return format!("one of: {}", names.join(", "));
            }
        }
    }
    match s["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&s["items"])),
        Some("object") if s["properties"].is_null() && s["additionalProperties"].is_object() => {
            format!("map[string]{}", type_of(&s["additionalProperties"]))
        }
        Some(t) => match s["format"].as_str() {
            Some(f) => format!("{t} ({f})"),
            None => t.to_string(),
        },
        None if s["required"].is_array() => "object".into(),
        None => "any".into(),
    }
}

fn fields(path: &str, s: &Value, required: bool, out: &mut String) {
    let mut desc = s["description"]
        .as_str()
        .unwrap_or("")
        .replace('\n', " ")
        .replace('|', "\\|");
    if let Some(e) = s["enum"].as_array() {
        let vals: Vec<String> = e
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map(String::from).unwrap_or(v.to_string())
                )
            })
            .collect();
        desc.push_str(&format!(" One of {}.", vals.join(", ")));
    }
    if !s["default"].is_null() {
        desc.push_str(&format!(" Default `{}`.", s["default"]));
    }
    out.push_str(&format!(
        "| `{path}` | {} | {} | {} |\n",
        type_of(s),
        if required { "yes" } else { "" },
        desc.trim()
    ));
    let item = if s["type"] == "array" { &s["items"] } else { s };
    let suffix = if s["type"] == "array" { "[]" } else { "" };
    if let Some(props) = item["properties"].as_object() {
        let req = item["required"].as_array();
        for (k, sub) in props {
            let r = req.is_some_and(|r| r.iter().any(|x| x == k.as_str()));
            fields(&format!("{path}{suffix}.{k}"), sub, r, out);
        }
    } else if item["additionalProperties"]["properties"].is_object() {
        fields(
            &format!("{path}{suffix}.<name>"),
            &item["additionalProperties"],
            false,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_reference_lists_nested_fields_with_types_and_required() {
        let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.io}
spec:
  group: example.io
  names: {kind: Thing, plural: things}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [model]
              properties:
                model:
                  description: "Where the model comes from."
                  type: object
                  properties:
                    url: {type: string}
                inputShape: {type: array, items: {type: integer, format: int64}}
                tiers:
                  type: object
                  additionalProperties: {type: object, properties: {slowdown: {type: number, default: 1.0}}}
                extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
                mode: {type: string, enum: [a, b]}
"#;
        let md = crd_reference(crd).unwrap();
        assert!(md.contains("#### `Thing` (example.io/v1)"), "{md}");
        assert!(md.contains("| `spec` | object | yes |"), "{md}");
        assert!(
            md.contains("| `spec.model` | object | yes | Where the model comes from. |"),
            "{md}"
        );
        assert!(md.contains("| `spec.model.url` | string |  |"), "{md}");
        assert!(
            md.contains("| `spec.inputShape` | []integer (int64) |"),
            "{md}"
        );
        assert!(md.contains("| `spec.tiers` | map[string]object |"), "{md}");
        assert!(
            md.contains("| `spec.tiers.<name>.slowdown` | number |  | Default `1.0`. |"),
            "{md}"
        );
        assert!(md.contains("| `spec.extra` | object (free-form) |"), "{md}");
        assert!(md.contains("One of `a`, `b`."), "{md}");
        assert!(crd_reference("kind: ConfigMap\n").is_err());
    }
}
