#!/usr/bin/env bash
# Checks systemd/tokend.service: `systemd-analyze verify`, an exposure of at most 1.2 in
# `systemd-analyze security --offline=true`, and that every system call tokend makes
# over a full cycle (start, health endpoints, SIGHUP, SIGUSR1, watchdog, SIGTERM) is
# allowed by the unit's SystemCallFilter. Needs root (installs the binary where the unit
# expects it), strace and systemd-analyze.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
unit="$repo/systemd/tokend.service"
bin=${1:-$repo/target/debug/tokend}

install -m 0755 "$bin" /usr/local/bin/tokend   # verify checks that ExecStart exists
systemd-analyze verify "$unit"
systemd-analyze security --offline=true --threshold=12 "$unit" | tail -1
echo "systemd-analyze verify and security (threshold 1.2): ok"

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
emu_port=$(port); health_port=$(port)
"$bin" emulator --listen "127.0.0.1:$emu_port" --lifetime 3s --client-secret s > "$work/emu.txt" &
for _ in $(seq 50); do grep -q refresh_token "$work/emu.txt" 2>/dev/null && break; sleep 0.1; done
awk '/refresh_token/{print $2}' "$work/emu.txt" > "$work/boot"
printf s > "$work/secret"
cat > "$work/t.toml" <<TOML
state_dir = "$work/state"
[health]
listen = "127.0.0.1:$health_port"
[credentials.c]
token_url = "http://127.0.0.1:$emu_port/oauth/token"
client_id = "tokend-demo"
client_secret_file = "$work/secret"
refresh_token_file = "$work/boot"
[credentials.c.refresh]
min_remaining = "1s"
[credentials.c.http]
allow_insecure_http = true
[[credentials.c.outputs]]
path = "$work/out/c/token"
TOML
NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=1000000 \
    strace -f -qq -o "$work/trace.txt" "$bin" run -c "$work/t.toml" 2> "$work/log.txt" &
sleep 2
pid=$(pgrep -f "tokend run -c $work/t.toml" | tail -1)
python3 -c "import urllib.request as u; [u.urlopen('http://127.0.0.1:$health_port/' + p).read() for p in ('healthz', 'metrics')]" || true
kill -HUP "$pid"; sleep 2; kill -USR1 "$pid"; sleep 2; kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
sleep 0.5

expand() {
    for group in "$@"; do
        systemd-analyze syscall-filter "$group" | tail -n +2 | awk '/^    [@a-z0-9_]/ {print $1}' |
            while read -r name; do case "$name" in @*) expand "$name" ;; *) echo "$name" ;; esac; done
    done
}
expand @system-service | sort -u > "$work/allowed"
expand @privileged @resources | sort -u > "$work/denied"
awk '{print $2}' "$work/trace.txt" | sed 's/(.*//' | grep -E '^[a-z0-9_]+$' | sort -u > "$work/used"
bad=0
while read -r call; do
    if ! grep -qx "$call" "$work/allowed" || grep -qx "$call" "$work/denied"; then
        echo "system call not allowed by the unit: $call"; bad=1
    fi
done < "$work/used"
rotations=$(grep -c rotated "$work/log.txt" || true)
echo "system calls used: $(wc -l < "$work/used"), rotations during the trace: $rotations"
test "$rotations" -ge 2
test "$bad" -eq 0
echo "systemd unit: 1 passed, 0 failed"
