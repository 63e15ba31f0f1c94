//! docs/crd-reference.md is generated from the CRD's own schema (`cnnpc crd --reference`) and
//! fails this test when stale (`CNNPC_BLESS=1 cargo test --test crd_reference` rewrites it).

mod common;

#[test]
fn the_crd_reference_is_generated_from_the_crd_schema() {
    let want = cnnpc::operator::crd_reference::document();
    let path = common::root().join("docs/crd-reference.md");
    if std::env::var_os("CNNPC_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        have, want,
        "docs/crd-reference.md is stale: cargo run -- crd --reference > docs/crd-reference.md"
    );
    // It documents what the schema holds: every spec field the sample uses, with its type.
    for field in [
        "spec.model.url",
        "spec.objective.minAccuracy",
        "spec.links.endEdgeMbps",
        "status.plan.id",
    ] {
        assert!(want.contains(&format!("| `{field}` |")), "{field} missing");
    }
}
