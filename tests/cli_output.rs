//! Output hygiene: no subcommand panics when its reader closes stdout (`cnnpc plan | head`),
//! nothing prints on stdout but `cnnpc::output`, and logs carry no ANSI escapes when stderr
//! is not a terminal.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

/// A pipe whose read end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors on success; each is owned exactly once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2)");
    drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    Stdio::from(unsafe { OwnedFd::from_raw_fd(fds[1]) })
}

#[test]
fn no_subcommand_panics_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chain.onnx");
    std::fs::write(&model, cnnpc::testkit::models::chain_model_bytes()).unwrap();
    let model = model.to_string_lossy().to_string();
    let profile = common::root().join("model_profile/mobilenet.yaml");
    let profile = profile.to_string_lossy().to_string();
    let plan = ["plan", "--profile", &profile, "--end-device", "MI8"];
    let cases: Vec<Vec<&str>> = vec![
        vec!["crd"],
        vec!["crd", "--reference"],
        plan.to_vec(),
        [&plan[..], &["--output", "json"]].concat(),
        [
            &plan[..],
            &["--accuracy-surface", "synthetic", "--min-accuracy", "0.9"],
        ]
        .concat(),
        vec!["cuts", "--model", &model],
        vec!["cuts", "--model", &model, "--output", "json"],
        vec!["--help"],
        vec!["plan", "--help"],
        vec!["--version"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_cnnpc"))
            .args(&args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "cnnpc {}: {stderr}",
            args.join(" ")
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "cnnpc {}: {stderr}",
            args.join(" ")
        );
        assert!(
            stderr.trim().is_empty() || !stderr.contains("error"),
            "cnnpc {}: {stderr}",
            args.join(" ")
        );
    }
}

#[test]
fn only_the_output_module_prints_on_stdout() {
    let mut offenders = Vec::new();
    let mut stack = vec![common::root().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p.ends_with("src/output.rs") {
                continue;
            }
            for (i, line) in std::fs::read_to_string(&p).unwrap().lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for m in ["println!(", "print!(", "std::io::stdout()"] {
                    if let Some(at) = code.find(m) {
                        if !code[..at].ends_with('e') {
                            offenders.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "print through cnnpc::output:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal_and_json_is_one_object_per_line() {
    // A real shard on a free port logs its start and its shutdown (SIGTERM).
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chain.onnx");
    std::fs::write(&model, cnnpc::testkit::models::chain_model_bytes()).unwrap();
    for format in ["text", "json"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cnnpc"))
            .args([
                "shard",
                "--model",
                model.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", format])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (loaded_tx, loaded) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if line.contains("shard loaded") {
                    let _ = loaded_tx.send(());
                }
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        // SIGTERM only once the shard has said it loaded (its handler is installed then): a
        // fixed sleep lost the race on a loaded machine, and the default action left no log.
        let _ = loaded.recv_timeout(std::time::Duration::from_secs(20));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let logs = reader.join().unwrap();
        assert!(logs.contains("shard loaded"), "{format}: {logs}");
        assert!(
            !logs.contains('\u{1b}'),
            "{format}: ANSI escapes in {logs:?}"
        );
        if format == "json" {
            for line in logs.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                assert!(
                    v["level"].is_string() && v["timestamp"].is_string(),
                    "{line}"
                );
            }
        }
    }
}
