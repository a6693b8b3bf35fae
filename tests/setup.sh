#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: the wasm32-wasip2 target, the Python
# packages (Triton's client, the OpenMetrics parser, PyYAML, mdBook, Ray, Dask, Spark), our own
# Python package (`pip install ./python`: maturin builds it into the workspace's target/, so
# `cargo test --release` reuses what it compiled), Chromium for the status page test and a
# Java runtime for Spark (Debian's packages, only when missing; needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
pip install -q -r tests/python/requirements.txt
debian=()
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then
    debian+=(chromium)
fi
if ! command -v java >/dev/null; then
    debian+=(openjdk-17-jre-headless)
fi
if [ ${#debian[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debian[@]}" >/dev/null
fi
# The release profile, as `cargo test --release` builds: one build of the shared crates.
pip install -q ./python
