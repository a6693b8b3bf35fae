//! The container image and the Kubernetes manifests, checked as far as this machine allows:
//!
//! - the `Containerfile` builds with buildah (vfs storage, no daemon) from the root filesystem
//!   `deploy/container/rootfs.sh` writes for this build's binary; the image runs as nonroot
//!   (65532), holds no shell, and its entrypoint is the binary;
//! - the image's own binary, run from the built root filesystem (chroot, as user 65532, the
//!   image's environment), serves the embedded demo over real HTTP; it writes nothing outside
//!   the image's volumes, so a read-only root filesystem holds;
//! - every manifest under `deploy/` validates against the Kubernetes schemas
//!   (`tests/deploy/validate.py`), and the ConfigMap's `edgeinfer.toml` parses with the
//!   server's own config loader.
//!
//! `podman run` is not used: rootless and rootful podman need user namespaces and rlimits these
//! machines refuse; chroot runs the same bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::*;
use crate::http::{get, post_json};
use crate::server::digits_request;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}{}", stdout(&output), stderr(&output));
    stdout(&output)
}

/// buildah with its own storage in `dir` (vfs: no overlay mounts needed).
fn buildah(dir: &Path) -> Command {
    let mut command = Command::new("buildah");
    command
        .arg("--storage-driver")
        .arg("vfs")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"));
    command
}

/// Every file outside the image's volumes, with its size and modification time.
fn outside_volumes(root: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let volumes = ["var/cache/edgeinfer", "var/lib/edgeinfer/models", "tmp"].map(|v| root.join(v));
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read rootfs").map(|e| e.expect("entry")) {
            let (path, meta) = (entry.path(), entry.metadata().expect("metadata"));
            if volumes.contains(&path) {
                continue;
            }
            if meta.is_dir() {
                pending.push(path.clone());
            }
            files.insert(path, (meta.len(), meta.modified().expect("mtime")));
        }
    }
    files
}

#[test]
fn the_container_image_builds_and_its_binary_serves_the_demo() {
    let tools = Command::new("buildah").arg("--version").output().is_ok() && Path::new("/usr/sbin/chroot").is_file();
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !(tools && root) {
        let why = "needs buildah (tests/setup.sh installs it) and root, for chroot";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED container image: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let context = dir.path().join("context");
    run(Command::new(repo_root().join("deploy/container/rootfs.sh"))
        .arg(env!("CARGO_BIN_EXE_edgeinfer"))
        .arg(context.join(".container-rootfs")));
    let storage = dir.path().join("buildah");
    let image = "localhost/edgeinfer:test";
    run(buildah(&storage)
        .args(["build", "--quiet", "--build-arg", "BINARY_STAGE=prebuilt", "-t", image, "-f"])
        .arg(repo_root().join("Containerfile"))
        .arg(&context));
    let config: serde_json::Value =
        serde_json::from_str(&run(buildah(&storage).args(["inspect", "--type", "image", image]))).expect("inspect");
    let oci = &config["OCIv1"]["config"];
    assert_eq!(oci["User"], "65532:65532", "runs as nonroot");
    assert_eq!(oci["Entrypoint"][0], "/usr/local/bin/edgeinfer");
    let env: Vec<String> = serde_json::from_value(oci["Env"].clone()).expect("env");

    let container = run(buildah(&storage).args(["from", image])).trim().to_string();
    let rootfs = PathBuf::from(run(buildah(&storage).args(["mount", &container])).trim());
    for absent in ["bin/sh", "usr/bin/apt", "bin/bash"] {
        assert!(!rootfs.join(absent).exists(), "the image holds no {absent}");
    }
    let before = outside_volumes(&rootfs);

    // `docker run IMAGE serve --listen ...`: the image's binary, user and environment.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Command::new("/usr/sbin/chroot");
    server.arg("--userspec=65532:65532").arg(&rootfs).arg("/usr/local/bin/edgeinfer");
    server.args(["serve", "--listen", &listen]).env_clear().stdout(Stdio::null()).stderr(Stdio::null());
    for pair in &env {
        if let Some((key, value)) = pair.split_once('=') {
            server.env(key, value);
        }
    }
    let mut child = server.spawn().expect("start the image's binary");
    let addr: SocketAddr = listen.parse().expect("addr");
    wait_until("the image's binary to serve the demo", Duration::from_secs(180), || {
        std::net::TcpStream::connect(addr).is_ok() && get(addr, "/v2/health/ready").status == 200
    });
    let reply = post_json(addr, "/v2/models/digits/infer", &digits_request(2));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["outputs"][0]["shape"], serde_json::json!([2]));
    assert_eq!(outside_volumes(&rootfs), before, "the server wrote outside its volumes");
    run(buildah(&storage).args(["umount", &container]));
    run(buildah(&storage).args(["rm", &container]));
    run(buildah(&storage).args(["rmi", "--all", "--force"]));
}

#[test]
fn the_kubernetes_manifests_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("edgeinfer.toml");
    let output = Command::new("python3")
        .arg(repo_root().join("tests/deploy/validate.py"))
        .arg(&config)
        .output()
        .expect("python3");
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let text = std::fs::read_to_string(&config).expect("the ConfigMap's edgeinfer.toml");
    let parsed = edgeinfer_server::ServerConfig::parse(&text).unwrap_or_else(|e| panic!("edgeinfer.toml: {e}"));
    assert_eq!(parsed.follow.len(), 1, "the fleet follows its registry repository");
}
