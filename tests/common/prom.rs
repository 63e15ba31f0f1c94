//! A real Prometheus (Debian's `prometheus`) for tests: found or skipped loudly (failed under
//! `CNNPC_REQUIRE_PROMETHEUS=1`, as `make test` sets it), started on a free loopback port with
//! a config in a temporary directory, killed on drop.

use std::process::{Child, Command, Stdio};

pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, or `None` after saying loudly that the test is skipped.
pub fn binary() -> Option<String> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string());
    if found.is_none() {
        if std::env::var("CNNPC_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!(
                "CNNPC_REQUIRE_PROMETHEUS=1 but no prometheus binary (apt-get install prometheus)"
            );
        }
        eprintln!("\n#### SKIPPED: no prometheus binary; `apt-get install prometheus` to run this test ####\n");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `bin` with `config` (prometheus.yml text).
pub fn start(bin: &str, config: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}
