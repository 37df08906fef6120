#!/usr/bin/env bash
# Runs the Dockerfile's builder-stage build command natively (no Docker engine here) and
# reports the size of the stripped static binary it produces. Needs musl-tools and the
# x86_64-unknown-linux-musl target (installed by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(awk '/^FROM .* AS build/ {in_build=1} /^FROM / && !/ AS build/ {in_build=0}
             in_build && /^RUN cargo build/ {sub(/^RUN /, ""); print}' Dockerfile)
test -n "$build" || { echo "no 'RUN cargo build' in the Dockerfile's build stage"; exit 1; }
echo "+ $build"
eval "$build"
bin=target/x86_64-unknown-linux-musl/release/tokend
file "$bin" 2>/dev/null || true
size=$(stat -c %s "$bin")
echo "stripped static binary: $size bytes ($(awk "BEGIN {printf \"%.2f\", $size/1048576}") MiB); limit 8 MB"
if nm "$bin" >/dev/null 2>&1 && [ "$(nm "$bin" 2>/dev/null | wc -l)" -gt 0 ]; then
    echo "the binary is not stripped"; exit 1
fi
test "$size" -le 8000000
"$bin" --version
echo "docker build command: 1 passed, 0 failed"
