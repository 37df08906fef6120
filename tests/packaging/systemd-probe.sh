#!/usr/bin/env bash
# Runs inside the container systemd-boot.sh boots, as root, with REPO, BIN and OUT set.
# Installs tokend as docs/systemd.md says, against the emulator, and
# checks what docs/systemd.md promises; one line per finding in $OUT/result.txt, then PASS or FAIL.
set -uo pipefail
out=$OUT/result.txt
: > "$out"
exec 2> "$OUT/probe.log"
trap 'journalctl -b --no-pager -o short-monotonic > "$OUT/journal.txt" 2>&1' EXIT
ok() { echo "ok: $*" >> "$out"; }
fail() {
    echo "FAIL: $*" >> "$out"
    exit 1
}
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
prop() { systemctl show -p "$2" --value "$1"; }
emu=http://127.0.0.1:18080
secret=client-secret-for-the-boot-test-3f9a

# The emulator, as a service of its own.
# (It prints its secret and a refresh token, and its command line holds the secret:
# neither goes to the journal, which is scanned for secrets at the end.)
systemd-run -q --unit=emulator --description=emulator -p StandardOutput=null \
    "$BIN" emulator --listen 127.0.0.1:18080 --lifetime 1h --client-id boot-test --client-secret "$secret"
for _ in $(seq 100); do curl -fsS "$emu/_emulator/stats" > /dev/null 2>&1 && break; sleep 0.1; done
# A new chain's first refresh token, as {"refresh_token": "..."}.
new_chain() { curl -fsS -X POST "$emu/_emulator/bootstrap" | sed -n 's/.*"refresh_token": *"\([^"]*\)".*/\1/p'; }
boot_rt=$(new_chain)
test -n "$boot_rt" || fail "the emulator did not start"

# The install steps of docs/systemd.md, as written (the configuration pointed at the emulator).
install -D -m 0644 "$REPO/systemd/tokend.sysusers" /etc/sysusers.d/tokend.conf
systemd-sysusers /etc/sysusers.d/tokend.conf || fail "systemd-sysusers"
install -m 0755 "$BIN" /usr/local/bin/tokend
install -d -m 0755 /etc/tokend
install -m 0644 "$REPO/config/blnk-systemd.toml" /etc/tokend/tokend.toml
sed -i -e 's/^client_id = "YOUR_CLIENT_ID"/client_id = "boot-test"\ntoken_url = "http:\/\/127.0.0.1:18080\/oauth\/token"\nauthorize_url = "http:\/\/127.0.0.1:18080\/oauth\/authorize"/' /etc/tokend/tokend.toml
printf '\n[credentials.blnk.http]\nallow_insecure_http = true\n' >> /etc/tokend/tokend.toml
(umask 077; printf '%s' "$secret" > /etc/tokend/blnk.client_secret)
(umask 077; printf '%s' "$boot_rt" > /etc/tokend/blnk.refresh_token)
install -m 0644 "$REPO/systemd/tokend.service" /etc/systemd/system/
install -D -m 0644 "$REPO/systemd/tokend.service.d/blnk.conf" /etc/systemd/system/tokend.service.d/blnk.conf
systemctl daemon-reload

# 1. The start job ends only once the token exists: the first answer takes 3 s.
curl -fsS -X POST "$emu/_emulator/faults" -d '[{"kind":"delay","ms":3000}]' > /dev/null
(sleep 1.5; prop tokend ActiveState > "$OUT/mid-start.txt") &
t0=$(date +%s%N)
systemctl enable --now tokend || fail "systemctl enable --now tokend"
took_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait
check "start took ${took_ms} ms (>= 3000: READY only with the token)" test "$took_ms" -ge 3000
check "ActiveState while the first answer was delayed: $(cat "$OUT/mid-start.txt")" \
    grep -qx activating "$OUT/mid-start.txt"

# 2. What docs/systemd.md promises once it runs.
check "active (running)" test "$(prop tokend ActiveState)/$(prop tokend SubState)" = active/running
check "status text: $(prop tokend StatusText)" test "$(prop tokend StatusText)" = "1/1 credentials ready"
check "outputs 0640 in the runtime directory" \
    test "$(stat -c %a /run/tokend/blnk/access_token)/$(stat -c %a /run/tokend/blnk/token.env)" = 640/640
check "state 0600, owned by tokend, in /var/lib/tokend" \
    test "$(stat -c %a/%U /var/lib/tokend/blnk.json)" = 600/tokend
check "/readyz 200" curl -fsS -o /dev/null http://127.0.0.1:9464/readyz

# 3. Apps with the drop-in of docs/systemd.md read the token, whether they run as a user of their
# own or as a DynamicUser; the same app without the group cannot.
app() { # name, User= line
    cat > "/etc/systemd/system/$1.service" <<UNIT
[Service]
Type=oneshot
$2
ExecStart=/bin/sh -c 'test -s /run/tokend/blnk/access_token && head -c 1 /run/tokend/blnk/access_token > /dev/null'
UNIT
}
dropin() {
    mkdir -p "/etc/systemd/system/$1.service.d"
    sed -n '/^# \/etc\/systemd\/system\/my-app.service.d\/tokend.conf$/,/^```$/p' "$REPO/docs/systemd.md" | sed '1d;$d' \
        > "/etc/systemd/system/$1.service.d/tokend.conf"
    grep -q SupplementaryGroups "/etc/systemd/system/$1.service.d/tokend.conf" || fail "the drop-in of docs/systemd.md was not found"
}
useradd --system app
app my-app User=app; dropin my-app
app my-dynamic-app DynamicUser=yes; dropin my-dynamic-app
app other-app User=app
systemctl daemon-reload
check "an app (User=app) with the documented drop-in reads the token" systemctl start my-app
check "an app (DynamicUser=yes) with the documented drop-in reads the token" systemctl start my-dynamic-app
check "the same app without the group cannot" bash -c '! systemctl start other-app 2>/dev/null'

reuses() { curl -fsS "$emu/_emulator/stats" | sed -n 's/.*"reuses": *\([0-9]*\).*/\1/p'; }
restarted() { # waits for a MainPID other than $1, active; up to $2 seconds
    for _ in $(seq $(($2 * 10))); do
        local pid; pid=$(prop tokend MainPID)
        if [ "$pid" != "$1" ] && [ "$pid" != 0 ] && [ "$(prop tokend ActiveState)" = active ]; then return 0; fi
        sleep 0.1
    done
    return 1
}

# 4. The watchdog (WatchdogSec shortened to 4 s for the test): a frozen tokend is
# killed and restarted, and the chain goes on.
mkdir -p /etc/systemd/system/tokend.service.d
printf '[Service]\nWatchdogSec=4s\nRestartSec=1s\n' > /etc/systemd/system/tokend.service.d/test.conf
systemctl daemon-reload && systemctl restart tokend
pid=$(prop tokend MainPID)
t0=$(date +%s%N)
kill -STOP "$pid"
restarted "$pid" 20 || fail "a frozen tokend was not restarted"
took_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
killed_by=$(journalctl -b -u tokend --no-pager | grep -c 'Watchdog timeout (limit 4s)')
# Killed within WatchdogSec of its last ping (pings every 2 s), back RestartSec later.
check "the watchdog killed the frozen tokend (${killed_by}x) and it was back in ${took_ms} ms (<= 4000 + 1000 + 2000 to start)" \
    test "$killed_by" = 1 -a "$took_ms" -le 7000
check "watchdog: no reuse at the server" test "$(reuses)" = 0

# 5. kill -9: restarted, no invalid_grant; a configuration error is not retried in a loop.
pid=$(prop tokend MainPID)
kill -9 "$pid"
check "kill -9: restarted" restarted "$pid" 20
systemctl kill -s USR1 tokend; sleep 1
check "kill -9: the chain goes on (no reuse, no invalid_grant)" \
    bash -c "test \"\$(curl -fsS $emu/_emulator/stats | sed -n 's/.*\"reuses\": *\([0-9]*\).*/\1/p')\" = 0 && ! journalctl -b -u tokend | grep -q invalid_grant"
cp /etc/tokend/tokend.toml "$OUT/good.toml"
echo 'this is not toml [' >> /etc/tokend/tokend.toml
systemctl restart tokend 2>/dev/null
sleep 4
restarts=$(prop tokend NRestarts)
sleep 4
check "a configuration error (exit 78) is not restarted: $(prop tokend ActiveState), NRestarts $restarts then $(prop tokend NRestarts)" \
    test "$(prop tokend ActiveState)" = failed -a "$restarts" = "$(prop tokend NRestarts)"
cp "$OUT/good.toml" /etc/tokend/tokend.toml
systemctl reset-failed tokend; systemctl start tokend || fail "start after the repair"

# 6. reload: a broken configuration keeps the old one; a valid one adds a credential.
pid=$(prop tokend MainPID)
echo 'this is not toml [' >> /etc/tokend/tokend.toml
systemctl reload tokend; sleep 1
check "reload with a broken configuration: still running, same process" \
    test "$(prop tokend ActiveState)/$(prop tokend MainPID)" = "active/$pid"
cp "$OUT/good.toml" /etc/tokend/tokend.toml
other_rt=$(new_chain)
cat >> /etc/tokend/tokend.toml <<TOML
[credentials.other]
client_id = "boot-test"
token_url = "http://127.0.0.1:18080/oauth/token"
client_secret_file = "/run/credentials/tokend.service/blnk_client_secret"
refresh_token = "$other_rt"
[credentials.other.http]
allow_insecure_http = true
[[credentials.other.outputs]]
path = "/run/tokend/other/access_token"
format = "raw"
mode = "0640"
TOML
systemctl reload tokend
for _ in $(seq 50); do test -s /run/tokend/other/access_token && break; sleep 0.1; done
check "reload with a valid configuration: the new credential's token, same process" \
    test -s /run/tokend/other/access_token -a "$(prop tokend MainPID)" = "$pid"

# 7. `tokend login --no-browser` as root before the first start (an empty bootstrap
# file), then start: tokend runs on what login wrote. A second login while it runs is
# adopted by the same process.
login() { # the browser's part: follow the printed URL, paste where it lands
    rm -f /tmp/login.in; mkfifo /tmp/login.in
    : > /tmp/login.out
    tokend login blnk -c /etc/tokend/tokend.toml --no-browser < /tmp/login.in > /tmp/login.out 2>> "$OUT/login.txt" &
    local pid=$! url=
    exec 3> /tmp/login.in
    for _ in $(seq 100); do url=$(sed -n 1p /tmp/login.out); [ -n "$url" ] && break; sleep 0.1; done
    local landed; landed=$(curl -fsS -o /dev/null -w '%{redirect_url}' "$url")
    echo "$landed" >&3
    exec 3>&-
    wait "$pid"; local status=$?
    cat /tmp/login.out >> "$OUT/login.txt"
    return $status
}
owners() { echo "$(stat -c %U /var/lib/tokend)/$(stat -c %U /var/lib/tokend/blnk.json)"; }
chain_ok() { # forces a refresh; the chain goes on with no reuse and no invalid_grant
    local before; before=$(curl -fsS "$emu/_emulator/stats" | sed -n 's/.*"refreshes": *\([0-9]*\).*/\1/p')
    systemctl kill -s USR1 tokend
    for _ in $(seq 50); do
        local now; now=$(curl -fsS "$emu/_emulator/stats" | sed -n 's/.*"refreshes": *\([0-9]*\).*/\1/p')
        [ "$now" -gt "$before" ] && break; sleep 0.1
    done
    sleep 0.5
    [ "$now" -gt "$before" ] && [ "$(reuses)" = 0 ] && ! journalctl -b -u tokend | grep -q invalid_grant
}
systemctl stop tokend
cp "$OUT/good.toml" /etc/tokend/tokend.toml   # without the credential of step 6
rm -rf /var/lib/tokend
install -m 0600 /dev/null /etc/tokend/blnk.refresh_token   # as docs/systemd.md says
check "login as root before the first start" login
check "the state login wrote belongs to root until the start: $(stat -c %U /var/lib/tokend/blnk.json)" \
    test "$(stat -c %U /var/lib/tokend/blnk.json)" = root
systemctl start tokend || fail "start after login"
check "at start systemd gives the state to tokend: $(owners)" \
    test "$(owners)" = tokend/tokend
check "tokend rotates the chain login started" chain_ok
pid=$(prop tokend MainPID)
check "a second login while it runs" login
check "... is adopted by the running tokend" grep -q "(pid $pid), which adopted it" "$OUT/login.txt"
same_process_goes_on() { chain_ok && test "$(prop tokend MainPID)" = "$pid"; }
check "... which rotates the new chain, same process" same_process_goes_on

# An install of the earlier unit (DynamicUser=yes, state in /var/lib/private/tokend)
# upgrades in place: at start, systemd moves the state back and gives it to tokend.
sed -e 's/^User=tokend$/DynamicUser=yes/' -e '/^Group=tokend$/d' "$REPO/systemd/tokend.service" \
    > /etc/systemd/system/tokend.service
systemctl daemon-reload && systemctl restart tokend
check "the earlier DynamicUser unit keeps its state in /var/lib/private/tokend" \
    test -s /var/lib/private/tokend/blnk.json -a -L /var/lib/tokend
install -m 0644 "$REPO/systemd/tokend.service" /etc/systemd/system/
systemctl daemon-reload && systemctl restart tokend
check "after the upgrade: /var/lib/tokend a directory of tokend's, not a link" \
    test ! -L /var/lib/tokend -a "$(owners)" = tokend/tokend
check "after the upgrade: the chain goes on" chain_ok

# 8. Nothing secret in the journal of the whole run.
journalctl -b --no-pager > "$OUT/journal.txt" 2>&1
leaks=0
for s in "$secret" "$boot_rt" "$other_rt" "$(cat /run/tokend/blnk/access_token)"; do
    grep -qF -- "$s" "$OUT/journal.txt" "$OUT/login.txt" && leaks=$((leaks + 1))
done
check "no secret in the journal (${leaks} found)" test "$leaks" = 0
echo PASS >> "$out"
