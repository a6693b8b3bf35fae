#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: the wasm32-wasip2 target, the Python
# packages (Triton's client, the OpenMetrics parser, PyYAML, mdBook, Ray, Dask, Spark), our own
# Python package (`pip install ./python`: maturin builds it into the workspace's target/, so
# `cargo test --release` reuses what it compiled), Chromium for the status page test and a
# Java runtime for Spark, the aarch64 cross linker and qemu-user (Debian's packages, only
# when missing; needs root or sudo), the aarch64 build of `edgeinfer` that
# tests/all/aarch64.rs serves under qemu, Cloudflare's workerd (npm, into target/npm)
# that tests/all/platforms.rs serves the packaged Worker with, and Debian's docker-registry,
# nginx and buildah for the fleet and container image tests (tests/all/fleet.rs, container.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 aarch64-unknown-linux-gnu
pip install -q -r tests/python/requirements.txt
debian=()
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then
    debian+=(chromium)
fi
if ! command -v java >/dev/null; then
    debian+=(openjdk-17-jre-headless)
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    debian+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
fi
if ! command -v qemu-aarch64 >/dev/null; then
    debian+=(qemu-user)
fi
if ! command -v npm >/dev/null; then
    debian+=(nodejs npm)
fi
# The fleet test's OCI registry (CNCF distribution) and load balancer; the image build.
if ! command -v docker-registry >/dev/null; then
    debian+=(docker-registry)
fi
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    debian+=(nginx)
fi
if ! command -v buildah >/dev/null; then
    debian+=(buildah)
fi
if [ ${#debian[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debian[@]}" >/dev/null
fi
# The release profile, as `cargo test --release` builds: one build of the shared crates.
pip install -q ./python
# The edge build for aarch64 (linker and runner in .cargo/config.toml); see docs/src/edge.md.
cargo build --release --target aarch64-unknown-linux-gnu --no-default-features --bin edgeinfer
# Cloudflare's Workers runtime and deploy tool, the versions tests/all/platforms.rs is written against.
npm install --silent --no-audit --no-fund --prefix target/npm workerd@1.20261123.1 wrangler@4.86.0
