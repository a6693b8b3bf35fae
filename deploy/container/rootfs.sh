#!/usr/bin/env bash
# Writes the runtime image's root filesystem for BINARY into OUT/system: the binary at
# /usr/local/bin/edgeinfer, the shared libraries it links (from ldd: glibc, libm, libgcc_s
# and the loader; nothing else), CA certificates for HTTPS registries, a non-root user
# (nonroot, 65532); and into OUT/state the directories nonroot writes in (the code cache, the
# model repository, its home), which the Containerfile copies owned by nonroot.
# Used by the Containerfile's build stage and, with a binary built already, by CI
# (`--build-arg BINARY_STAGE=prebuilt`, see docs/src/kubernetes.md).
set -euo pipefail
binary=$1
out=$2
rm -rf "$out"
mkdir -p "$out"/state/cache "$out"/state/models "$out"/state/home
out=$out/system
mkdir -p "$out"/usr/local/bin "$out"/etc/ssl/certs "$out"/tmp "$out"/var/lib/edgeinfer "$out"/var/cache "$out"/home
install -m 0755 "$binary" "$out"/usr/local/bin/edgeinfer
# The libraries and loader, at the paths the binary asks for.
ldd "$binary" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$out"/etc/ssl/certs/
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$out"/etc/passwd
printf 'root:x:0:\nnonroot:x:65532:\n' > "$out"/etc/group
chmod 1777 "$out"/tmp
# The demo model compiled into the image's code cache, so `docker run IMAGE` serves at once
# (skipped, saying so, when BINARY does not run here, e.g. cross-built).
if EDGEINFER_CACHE_DIR="$out/../state/cache" "$binary" verify >/dev/null; then
    # Keep the compiled code; cranelift's incremental cache (about 260 MB) only speeds up
    # compiling further models, which a replica does into its own cache volume.
    rm -rf "$out/../state/cache/functions"
else
    echo "rootfs.sh: $binary does not run here; the image compiles the demo model on first start" >&2
fi
