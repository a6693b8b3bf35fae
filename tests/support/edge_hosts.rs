//! The edge platforms' local runtimes, shared by the platform tests (`tests/all/platforms.rs`)
//! and the platform bench (`benches/platforms.rs`): `edgeinfer package`, Cloudflare's
//! `workerd` serving a packaged Worker, and a static file server for the browser package.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_path_buf()
}

/// `edgeinfer package --target TARGET --repo REPO --model MODEL --out OUT`.
pub fn package(repo: &Path, model: &str, target: &str, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["package", "--target", target, "--model", model, "--repo"])
        .arg(repo)
        .arg("--out")
        .arg(out)
        .output()
        .expect("edgeinfer package")
}

/// [`package`], which must succeed.
pub fn package_ok(repo: &Path, model: &str, target: &str, out: &Path) {
    let output = package(repo, model, target, out);
    assert!(output.status.success(), "package {model} for {target}: {}", String::from_utf8_lossy(&output.stderr));
}

/// workerd as `tests/setup.sh` installs it (`target/npm/node_modules/.bin/workerd`), or on
/// PATH.
pub fn workerd_binary() -> Option<PathBuf> {
    let installed = repo_root().join("target/npm/node_modules/.bin/workerd");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|dir| dir.join("workerd"));
    std::iter::once(installed).chain(on_path).find(|p| p.is_file())
}

/// wrangler as `tests/setup.sh` installs it (`target/npm/node_modules/.bin/wrangler`).
pub fn wrangler_binary() -> Option<PathBuf> {
    Some(repo_root().join("target/npm/node_modules/.bin/wrangler")).filter(|p| p.is_file())
}

/// `workerd serve OUT/config.capnp` on a loopback listener this process opened and handed
/// down (`--socket-fd`), so no port is guessed; killed when dropped. The caller waits for it
/// to be ready.
pub struct Workerd {
    child: Child,
    /// Where the Worker answers.
    pub addr: SocketAddr,
}

impl Workerd {
    /// Starts workerd on the package in `package` (its `config.capnp`).
    pub fn start(binary: &Path, package: &Path) -> Workerd {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let socket = socket2::SockRef::from(&listener);
        socket.set_cloexec(false).expect("inheritable listener");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let child = Command::new(binary)
            .arg("serve")
            .arg(package.join("config.capnp"))
            .arg(format!("--socket-fd=http={fd}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("workerd starts");
        socket.set_cloexec(true).expect("listener closed on exec again");
        drop(listener);
        Workerd { child, addr }
    }

    /// The workerd process's id (its memory is read from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A static file server for browser pages: GET serves files under its root (wasm as
/// `application/wasm`), `POST /results` hands the page's report to the caller.
pub struct StaticServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The body of the last `POST /results`.
    pub results: Arc<Mutex<Option<String>>>,
}

impl StaticServer {
    /// Serves `root` on a loopback port, one thread per connection.
    pub fn start(root: PathBuf) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let results = Arc::new(Mutex::new(None));
        let report = results.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, report) = (root.clone(), report.clone());
                std::thread::spawn(move || serve_file(stream, &root, &report));
            }
        });
        StaticServer { addr, results }
    }

    /// The report posted so far, taken.
    pub fn take_results(&self) -> Option<String> {
        self.results.lock().expect("results").take()
    }
}

fn serve_file(stream: TcpStream, root: &Path, report: &Mutex<Option<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/").to_string());
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, kind, content) = if method == "POST" && path == "/results" {
        *report.lock().expect("results") = Some(String::from_utf8_lossy(&body).into_owned());
        ("204 No Content", "text/plain", Vec::new())
    } else {
        let file = root.join(path.trim_start_matches('/'));
        match (!path.contains(".."), std::fs::read(&file)) {
            (true, Ok(bytes)) => {
                let kind = match file.extension().and_then(|e| e.to_str()) {
                    Some("js") => "text/javascript",
                    Some("wasm") => "application/wasm",
                    Some("html") => "text/html",
                    _ => "application/json",
                };
                ("200 OK", kind, bytes)
            }
            _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
        }
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&content));
}

/// Chromium (or Chrome) on PATH.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find_map(|dir| {
        ["chromium", "chromium-browser", "google-chrome"].into_iter().map(|name| dir.join(name)).find(|p| p.is_file())
    })
}

/// Headless Chromium on `url` (a page that posts its results), killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens `url` in `chromium` (its path) with a throwaway profile.
    pub fn open(chromium: &Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let child = Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        Browser { child, _profile: profile }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
