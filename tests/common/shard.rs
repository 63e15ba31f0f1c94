//! Real `cnnpc shard` processes for the integration tests. Each listens on a port the OS picks
//! and reads it back from the shard's own log ("shard serving", its bound address), so no other
//! test can take the port between a probe and the bind; each is killed on drop; and one that
//! dies before it is ready fails the test at once, with its log, instead of a long wait.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// PP-OCR's direction classifier: its input, and the preprocessing its images take.
pub const PPOCR_SHAPE: &str = "1,3,48,192";
pub const PPOCR_MODEL_NAME: &str = "cls";
/// Its preprocessing, as `--scale/--mean/--std` arguments: (pixel / 255 - 0.5) / 0.5.
pub const PPOCR_PREPROCESS: [&str; 6] =
    ["--scale", "0.0039215686", "--mean", "0.5", "--std", "0.5"];
/// Its first activation: the end → cloud cut the OIP and shadow tests split at.
pub const PPOCR_CUT: &str = "relu_0.tmp_0";

/// `models/ppocr_cls.onnx`, or `None` (a loud skip) when it was not fetched; with
/// `CNNPC_REQUIRE_MODELS` set (CI), its absence fails.
pub fn ppocr_model() -> Option<PathBuf> {
    let p = super::root().join("models/ppocr_cls.onnx");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CNNPC_REQUIRE_MODELS").is_err(),
        "models/ppocr_cls.onnx is missing: bash scripts/fetch-models.sh"
    );
    eprintln!(
        "\n#### SKIPPED: models/ppocr_cls.onnx is missing (bash scripts/fetch-models.sh) ####\n"
    );
    None
}

/// A shard of PP-OCR's classifier with its preprocessing, plan `p1`, no drain; `extra` adds
/// the split, tier, next hop and the rest.
pub fn ppocr(model: &Path, extra: &[&str]) -> ShardProcess {
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "--input-shape",
        PPOCR_SHAPE,
        "--model-name",
        PPOCR_MODEL_NAME,
        "--drain-seconds",
        "0",
        "--plan-id",
        "p1",
    ];
    args.extend_from_slice(&PPOCR_PREPROCESS);
    args.extend_from_slice(extra);
    ShardProcess::spawn(&args)
}

/// A running `cnnpc shard`, killed on drop.
pub struct ShardProcess {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

/// How long a shard may take to load its model and bind, or to become ready.
const STARTUP: Duration = Duration::from_secs(180);

impl ShardProcess {
    /// `cnnpc shard ARGS --listen 127.0.0.1:0 --log-format json`, once it has bound its port.
    pub fn spawn(args: &[&str]) -> ShardProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cnnpc"))
            .arg("shard")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cnnpc shard starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let kept = log.clone();
        // Reads the log to its end, so the shard never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("shard serving") {
                    if let Some(port) = bound_port(&line) {
                        let _ = port_tx.send(port);
                    }
                }
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut shard = ShardProcess {
            child,
            port: 0,
            log,
        };
        let deadline = Instant::now() + STARTUP;
        shard.port = loop {
            if let Ok(port) = port_rx.recv_timeout(Duration::from_millis(200)) {
                break port;
            }
            shard.fail_if_exited();
            assert!(
                Instant::now() < deadline,
                "the shard did not bind within {STARTUP:?}: {}",
                shard.log()
            );
        };
        shard
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn fail_if_exited(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            // Let the reader take the last lines.
            std::thread::sleep(Duration::from_millis(100));
            panic!("the shard exited ({status}): {}", self.log());
        }
    }

    /// Until `/readyz` answers 200 (the model is loaded and the shard takes requests).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP;
        while !ready(self.port) {
            self.fail_if_exited();
            assert!(
                Instant::now() < deadline,
                "port {} never became ready: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ShardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of the bound address in a "shard serving" log line (`addr` is `Some(IP:PORT)`).
fn bound_port(line: &str) -> Option<u16> {
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&p| p != 0)
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}
