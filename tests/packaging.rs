//! The container image, checked without docker: the Dockerfile runs as a
//! non-root user, ships the font the code reads, copies only what exists and is not
//! dockerignored, and builds with a new enough Rust (e2e/run.sh: tests/e2e_script.rs).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap()
}

/// The instructions of the Dockerfile's last stage.
fn final_stage(dockerfile: &str) -> Vec<String> {
    let lines: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    lines[start..]
        .iter()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .cloned()
        .collect()
}

#[test]
fn the_image_runs_as_non_root_with_the_font_and_an_exec_entrypoint() {
    let df = read("Dockerfile");
    let last = final_stage(&df);
    let user = last
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("the final stage sets USER");
    let uid = user[5..].split(':').next().unwrap().trim();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER must be a numeric non-root UID (runAsNonRoot checks it): {user}"
    );
    // The chart's runAsUser is the image's user.
    assert!(read("charts/cnnpc/values.yaml").contains(&format!("runAsUser: {uid}")));
    // The font the calibration pages are rendered with, at the path the code reads.
    let font = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    assert!(
        read("src/onnx/pages.rs").contains(font),
        "the code moved the font: update the Dockerfile"
    );
    assert!(
        last.iter()
            .any(|l| l.starts_with("COPY") && l.trim_end().ends_with(font)),
        "the final stage lacks {font}"
    );
    let ep = last
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    assert!(
        ep.contains("[\"/usr/local/bin/cnnpc\"]"),
        "exec-form entrypoint of the binary: {ep}"
    );
    assert!(last
        .iter()
        .any(|l| l.contains("/usr/local/bin/cnnpc") && l.starts_with("COPY --from=build")));
}

#[test]
fn the_build_context_has_what_the_dockerfile_copies() {
    let df = read("Dockerfile");
    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    // Docker's rules for the patterns used here: `dir`, `dir/*`, and `!path` exceptions, the
    // last matching line wins.
    let ignored = |p: &str| {
        let mut out = false;
        for i in &ignore {
            let (neg, pat) = match i.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, i.as_str()),
            };
            let hit = match pat.strip_suffix("/*") {
                Some(dir) => p.starts_with(&format!("{dir}/")),
                None => p == pat || p.starts_with(&format!("{pat}/")),
            };
            if hit {
                out = !neg;
            }
        }
        out
    };
    let mut copied = 0;
    for line in df
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &parts[..parts.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                Path::new(&root().join(src)).exists(),
                "COPY {src}: no such path"
            );
            assert!(!ignored(src), "COPY {src}, but .dockerignore excludes it");
            copied += 1;
        }
    }
    assert!(copied >= 3, "Cargo.toml, Cargo.lock, src at least");
    for heavy in ["target", "models/open-nsfw.onnx", ".git"] {
        assert!(ignored(heavy), ".dockerignore should exclude {heavy}");
    }
}

#[test]
fn the_builder_rust_is_new_enough() {
    let df = read("Dockerfile");
    let have = df
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION=");
    let want = read("Cargo.toml")
        .lines()
        .find_map(|l| {
            l.strip_prefix("rust-version = ")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap();
    let v = |s: &str| {
        s.split('.')
            .map(|x| x.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        v(have) >= v(&want),
        "builder Rust {have} < rust-version {want}"
    );
}
