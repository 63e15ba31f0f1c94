//! Real kernel link shaping for tests that run as root: a chain of network namespaces joined by
//! veth pairs, each link limited with `tc … tbf` (this kernel has tbf and htb but no netem, so a
//! delay is still emulated in user space, [`crate::runtime::link`]).
//!
//! Nothing here touches the host's own interfaces: every address and qdisc lives inside the
//! namespaces, which have no route out, so traffic only flows between them. Dropping the
//! [`NetChain`] deletes the namespaces, and the veths with them.
//!
//! Code runs "inside" a namespace by running on a thread that has joined it with `setns(2)`
//! ([`Netns::spawn`]): sockets a thread creates belong to its namespace, so a shard server on a
//! current-thread tokio runtime there listens and connects only there.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why namespaces cannot be used here, or `None` if they can (root, `ip` and `tc` present, and a
/// namespace can actually be created). Tests print this and skip.
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces and tc need it)".into());
    }
    for tool in ["ip", "tc"] {
        match Command::new(tool).arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => return Some(format!("`{tool}` (iproute2) is not installed")),
        }
    }
    match Netns::create(&unique_name("probe")) {
        Ok(_) => None,
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cnnpc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, turning a non-zero exit into an error that quotes it and its stderr.
fn run(cmd: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(cmd).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A named network namespace (`ip netns`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> io::Result<Netns> {
        run("ip", &["netns", "add", name])?;
        let ns = Netns { name: name.into() };
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace (for good: use a thread of its own).
    pub fn enter_current_thread(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(format!("/var/run/netns/{}", self.name))?;
        // SAFETY: `f` is an open namespace file for the duration of the call.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside this namespace.
    pub fn spawn<T, F>(&self, f: F) -> std::thread::JoinHandle<io::Result<T>>
    where
        F: FnOnce() -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let name = self.name.clone();
        std::thread::spawn(move || {
            Netns { name }.enter_borrowed()?;
            f()
        })
    }

    /// [`Netns::enter_current_thread`] on a handle that must not delete the namespace on drop.
    fn enter_borrowed(self) -> io::Result<()> {
        let r = self.enter_current_thread();
        std::mem::forget(self);
        r
    }

    /// `tc qdisc replace … tbf` on `dev` in this namespace: `mbit` Mbit/s (10^6 bit/s) out of it.
    pub fn shape(&self, dev: &str, mbit: f64) -> io::Result<()> {
        // Burst: 10 ms worth of bytes (at least a jumbo segment), so the rate holds at HZ=100;
        // queue up to 100 ms before dropping.
        let burst = ((mbit * 1e6 / 8.0 / 100.0) as u64).max(16 * 1024);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "tc",
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                &format!("{}kbit", (mbit * 1e3).round() as u64),
                "burst",
                &burst.to_string(),
                "latency",
                "100ms",
            ],
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("netns cleanup: {e}");
        }
    }
}

/// Namespaces `0..n` in a line; link `i` joins namespace `i` (address `10.201.i.1`, device
/// `cn-down`) and `i+1` (`10.201.i.2`, device `cn-up`), each direction shaped with tbf when
/// a rate is given.
#[derive(Debug)]
pub struct NetChain {
    pub namespaces: Vec<Netns>,
}

impl NetChain {
    /// `rates[i]`: Mbit/s of link `i` (`None` = unshaped); `rates.len() + 1` namespaces.
    pub fn new(tag: &str, rates: &[Option<f64>]) -> io::Result<NetChain> {
        let mut chain = NetChain {
            namespaces: Vec::new(),
        };
        for _ in 0..=rates.len() {
            chain.namespaces.push(Netns::create(&unique_name(tag))?);
        }
        for (i, rate) in rates.iter().enumerate() {
            let (a, b) = (&chain.namespaces[i], &chain.namespaces[i + 1]);
            run(
                "ip",
                &[
                    "link", "add", "cn-down", "netns", &a.name, "type", "veth", "peer", "name",
                    "cn-up", "netns", &b.name,
                ],
            )?;
            for (ns, dev, addr) in [
                (a, "cn-down", Self::addr(i, true)),
                (b, "cn-up", Self::addr(i, false)),
            ] {
                run(
                    "ip",
                    &[
                        "-n",
                        &ns.name,
                        "addr",
                        "add",
                        &format!("{addr}/24"),
                        "dev",
                        dev,
                    ],
                )?;
                run("ip", &["-n", &ns.name, "link", "set", dev, "up"])?;
                if let Some(mbit) = rate {
                    ns.shape(dev, *mbit)?;
                }
            }
        }
        Ok(chain)
    }

    /// Address on link `i`: of its upper namespace (`i`) if `upper`, else of namespace `i+1`.
    pub fn addr(link: usize, upper: bool) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, link as u8, if upper { 1 } else { 2 })
    }
}
