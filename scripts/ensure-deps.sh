# Sourced by scripts/bench and scripts/test: make sure what the build links is here.
# jemalloc comes from Debian's libjemalloc-dev, installed with apt-get when
# pkg-config cannot find it.
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
if ! command -v swift >/dev/null 2>&1; then
    echo "error: swift is not on PATH (expected Swift 6.3 at /opt/swift)" >&2
    exit 1
fi
if ! pkg-config --exists jemalloc 2>/dev/null; then
    echo "jemalloc not found by pkg-config: installing libjemalloc-dev with apt-get" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libjemalloc-dev >&2 || {
        echo "error: could not install libjemalloc-dev; install it and run again" >&2
        exit 1
    }
    pkg-config --exists jemalloc || { echo "error: pkg-config still cannot find jemalloc" >&2; exit 1; }
fi
