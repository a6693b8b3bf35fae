#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: the wasm32-wasip2 target, the Python
# packages (Triton's client, the OpenMetrics parser, PyYAML, mdBook) and Chromium for the status page
# test (Debian's package, only when no Chromium is on PATH; needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
pip install -q -r tests/python/requirements.txt
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
