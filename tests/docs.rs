//! The docs a newcomer reads: the README is a page that gives the two commands first, every
//! relative link in the docs points at a file that exists, and every benchmark section names
//! the command that reproduces it.

mod common;

fn markdown_files() -> Vec<String> {
    let mut out = vec![
        "README.md".to_string(),
        "charts/cnnpc/README.md".into(),
        "e2e/README.md".into(),
    ];
    for e in std::fs::read_dir(common::root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            out.push(format!("docs/{}", p.file_name().unwrap().to_string_lossy()));
        }
    }
    out
}

#[test]
fn the_readme_is_a_page_and_gives_the_two_commands_first() {
    let readme = common::read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 100,
        "README.md is {lines} lines: keep it to two screens, move the rest to docs/"
    );
    let first_block = readme
        .split("```")
        .nth(1)
        .expect("a code block in the README");
    assert!(
        first_block.contains("make demo") && first_block.contains("make test"),
        "the README's first code block must be the two commands: {first_block}"
    );
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = common::read(&file);
        let dir = std::path::Path::new(&file).parent().unwrap().to_path_buf();
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            let path = target.split('#').next().unwrap_or("");
            // A path (`docs/x.md`, `../e2e/README.md`), not a URL or formula text like `[0](1-r)`.
            let is_path = path.contains('/') || path.contains('.');
            if !is_path || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            if !common::root().join(&dir).join(path).exists() {
                broken.push(format!("{file}: {target}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_benchmark_section_names_the_command_that_reproduces_it() {
    let text = common::read("docs/benchmarks.md");
    let sections: Vec<&str> = text.split("\n## ").skip(1).collect();
    assert!(sections.len() >= 3, "{} sections", sections.len());
    for s in sections {
        let title = s.lines().next().unwrap_or("");
        assert!(
            s.contains("make bench-") || s.contains("cnnpc bench"),
            "section {title:?} does not say how to reproduce its numbers"
        );
    }
}
