//! Soak driver shared by the short soak test (`tests/all/soak.rs`) and the long soak bench
//! (`benches/soak.rs`): runs the real `edgeinfer serve` binary, churns it with keep-alive
//! clients and clients that disconnect at every stage, and samples its RSS, open file
//! descriptors and threads from `/proc`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::http::{KeepAlive, build, request};

/// `edgeinfer serve` running as a child process on a loopback port.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves gRPC, when started with `--grpc-listen`.
    pub grpc_addr: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts `edgeinfer serve --repo REPO --listen 127.0.0.1:0` and waits for its address.
    pub fn start(repo: &Path, cache: &Path) -> ServerProcess {
        Self::start_with(repo, cache, &[])
    }

    /// The same with `args` added (e.g. `--grpc-listen 127.0.0.1:0`).
    pub fn start_with(repo: &Path, cache: &Path, args: &[&str]) -> ServerProcess {
        Self::start_program(Command::new(env!("CARGO_BIN_EXE_edgeinfer")), repo, cache, args, Duration::from_secs(120))
    }

    /// `program` (an `edgeinfer` binary, or an emulator running one) with `serve` and the
    /// arguments of [`Self::start_with`]; waits up to `patience` for its addresses.
    pub fn start_program(
        program: Command,
        repo: &Path,
        cache: &Path,
        args: &[&str],
        patience: Duration,
    ) -> ServerProcess {
        Self::start_configured(program, repo, cache, "", args, patience)
    }

    /// [`Self::start_program`] with `settings` (top-level `edgeinfer.toml` keys) in its
    /// config file; `--listen` among `args` replaces the default `127.0.0.1:0`.
    pub fn start_configured(
        mut program: Command,
        repo: &Path,
        cache: &Path,
        settings: &str,
        args: &[&str],
        patience: Duration,
    ) -> ServerProcess {
        // Bounded caches (the feedback index, kept pool pages) are small enough to fill
        // during the warm-up, so any growth afterwards is a leak.
        let config = repo.join("soak.toml");
        std::fs::write(&config, format!("{settings}\n[monitoring]\nfeedback_index = 1000\n")).expect("soak config");
        program.arg("serve");
        if !args.contains(&"--listen") {
            program.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = program
            .arg("--config")
            .arg(&config)
            .arg("--repo")
            .arg(repo)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .env("RUST_LOG", "edgeinfer=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgeinfer serve");
        let stderr = child.stderr.take().expect("stderr");
        let (found, address) = std::sync::mpsc::channel();
        let wants_grpc = args.contains(&"--grpc-listen");
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("on http://").nth(1) {
                    let _ = found.send(addr.trim().to_string());
                } else if let Some(addr) = line.strip_prefix("gRPC").and_then(|l| l.rsplit(" on ").next()) {
                    let _ = found.send(addr.trim().to_string());
                }
            }
        });
        let mut next = || -> SocketAddr {
            let addr = address.recv_timeout(patience).expect("the server printed its address");
            addr.parse().expect("address")
        };
        let addr = next();
        let grpc_addr = wants_grpc.then(&mut next);
        ServerProcess { addr, grpc_addr, child }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resource use now.
    pub fn usage(&self) -> Usage {
        process_usage(self.pid())
    }
}

/// The resource use of process `pid` now, from `/proc`.
pub fn process_usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    Usage {
        rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        rss_file_kib: field("RssFile:"),
        fds: fds as u64,
        threads: field("Threads:"),
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resource use of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Of it, anonymous memory (heap, pools, instance memory), KiB.
    pub rss_anon_kib: u64,
    /// Of it, file pages (the binary, compiled code mapped from the cache), KiB.
    pub rss_file_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

/// What a churn produced.
#[derive(Debug, Default)]
pub struct Churn {
    /// Requests answered as expected.
    pub answered: AtomicU64,
    /// Connections dropped on purpose.
    pub disconnects: AtomicU64,
    /// Answers with an unexpected status.
    pub unexpected: AtomicU64,
}

/// Runs `clients` misbehaving clients against `addr` for `duration`; `body` is one valid
/// digits request.
pub fn churn(addr: SocketAddr, clients: usize, duration: Duration, body: &[u8], churn: &Churn) {
    let until = Instant::now() + duration;
    let infer = "/v2/models/digits/infer";
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                while Instant::now() < until {
                    match fastrand::u8(0..10) {
                        0..=4 => {
                            let mut connection = KeepAlive::connect(addr);
                            for _ in 0..20 {
                                let reply = connection.post_json(infer, body);
                                count(churn, reply.status, &[200, 503]);
                            }
                        }
                        5 => {
                            let raw = build("POST", infer, &[], body);
                            vanish(addr, &raw[..raw.len() - body.len() / 2], churn);
                        }
                        6 => vanish(addr, &build("POST", infer, &[], body), churn),
                        7 => {
                            if let Ok(mut stream) = TcpStream::connect(addr) {
                                let _ = stream.write_all(&build("POST", infer, &[], body));
                                let mut first = [0u8; 7];
                                let _ = stream.read(&mut first);
                                churn.disconnects.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        8 => count(churn, request(addr, "POST", infer, &[], b"{\"inputs\": [").status, &[400, 503]),
                        _ => count(churn, request(addr, "GET", "/v2/health/ready", &[], b"").status, &[200]),
                    }
                }
            });
        }
    });
}

fn count(churn: &Churn, status: u16, allowed: &[u16]) {
    if allowed.contains(&status) {
        churn.answered.fetch_add(1, Ordering::Relaxed);
    } else {
        churn.unexpected.fetch_add(1, Ordering::Relaxed);
    }
}

fn vanish(addr: SocketAddr, raw: &[u8], churn: &Churn) {
    if let Ok(mut stream) = TcpStream::connect(addr) {
        let _ = stream.write_all(raw);
        churn.disconnects.fetch_add(1, Ordering::Relaxed);
    }
}
