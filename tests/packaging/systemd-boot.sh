#!/usr/bin/env bash
# Boots a real systemd (systemd-nspawn over this machine's own system, changes thrown
# away) and runs the shipped unit in it, as docs/systemd.md installs it
#. The probe, tests/packaging/systemd-probe.sh, runs inside as a service,
# writes its findings to a bound directory and powers the container off.
# Usage: systemd-boot.sh [TOKEND_BINARY]   (needs root and systemd-container)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:-$repo/target/debug/tokend}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/probe"
# A machine id makes it not a first boot: no presets, so the services this machine has
# installed (etcd, prometheus) stay off.
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/machine-id"
# The DynamicUser app of the probe resolves its user through nss-systemd.
printf 'passwd: files systemd\ngroup: files systemd\nshadow: files\nhosts: files dns\n' > "$work/nsswitch.conf"
cat > "$work/probe.service" <<UNIT
[Unit]
Description=tokend's systemd probe
After=multi-user.target
[Service]
Type=oneshot
Environment=REPO=$repo BIN=$bin OUT=/probe
ExecStart=/bin/bash $repo/tests/packaging/systemd-probe.sh
ExecStopPost=/bin/systemctl --no-block poweroff
UNIT
# nspawn cleans up under /run/systemd/nspawn only on a tmpfs (not so on a host that
# was not booted by systemd, like the CI machines).
mkdir -p /run/systemd/nspawn
findmnt /run/systemd/nspawn > /dev/null || mount -t tmpfs tmpfs /run/systemd/nspawn
# --volatile=yes: a throw-away root with this machine's /usr, read-only; /usr/local/bin
# a tmpfs so that the documented install steps run as written.
timeout 600 systemd-nspawn -q --register=no --keep-unit -M tokend-boot -D / \
    --volatile=yes --boot --tmpfs=/usr/local/bin \
    --bind-ro="$work/machine-id:/etc/machine-id" \
    --bind-ro="$repo" --bind-ro="$bin" \
    --bind-ro="$work/nsswitch.conf:/etc/nsswitch.conf" \
    --bind="$work/probe:/probe" \
    --bind-ro="$work/probe.service:/etc/systemd/system/tokend-probe.service" \
    systemd.firstboot=off systemd.wants=tokend-probe.service > "$work/boot.log" 2>&1 || true
cat "$work/probe/result.txt" 2>/dev/null || { tail -40 "$work/boot.log"; echo "the probe wrote nothing"; exit 1; }
if grep -q '^FAIL' "$work/probe/result.txt" || ! grep -q '^PASS' "$work/probe/result.txt"; then
    echo "--- the probe's errors"
    tail -20 "$work/probe/probe.log" "$work/probe/login.txt" 2>/dev/null || true
    echo "--- the end of the journal"
    tail -60 "$work/probe/journal.txt"
    exit 1
fi
echo "systemd boot test: 1 passed, 0 failed"
