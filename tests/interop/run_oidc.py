#!/usr/bin/env python3
"""tokend login against a real OpenID provider that enforces OpenID Connect Core §11.

node-oidc-provider (pinned in oidc/package-lock.json, installed into
oidc/node_modules with `npm ci` on first use) runs on 127.0.0.1 as a strict provider:
a refresh token only with the offline_access scope, which it grants only with
prompt=consent; refresh tokens rotate on every use and a replay revokes the grant;
access tokens live 5 s. tokend is configured with only `issuer` and
`scope = "openid offline_access api:read"`; a scripted user agent goes through the
provider's development login and consent pages while `tokend login` waits on its
loopback listener. Then `tokend run` rotates from the state login wrote until it has
rotated ROTATIONS times, and every published access token must be active according
to the provider's introspection endpoint. The client secret holds `+ / : = %`.

Usage: run_oidc.py [--tokend PATH] [--rotations N]
"""
import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from helpers import Browser, free_port, page_form, read_state, report, stop, wait_listening  # noqa: E402 (beside this script)

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "oidc")
CLIENT_ID = "tokend"


def log(msg):
    print(f"[oidc] {msg}", flush=True)


def ensure_provider():
    stamp = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
    if os.path.exists(stamp):
        return
    log("installing the pinned oidc-provider (npm ci)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                   check=True)


def basic(secret):
    q = urllib.parse.quote_plus
    return "Basic " + base64.b64encode(f"{q(CLIENT_ID)}:{q(secret)}".encode()).decode()


def post(port, path, form, secret):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": basic(secret),
                 "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "{}")


def active(port, token, secret):
    status, body = post(port, "/token/introspection", {"token": token}, secret)
    return status == 200 and body.get("active") is True


def login(args, cfg, work):
    """`tokend login`, with the user agent playing the person; returns (exit, out, err)."""
    proc = subprocess.Popen([args.tokend, "login", "oidc", "-c", cfg, "--timeout", "60s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    with open(os.path.join(work, "authorize_url"), "w") as f:
        f.write(url)
    browser = Browser()
    try:
        where, page = browser.get(url)
        for step in range(4):
            fields = page_form(page)
            if fields.get("prompt") == "login":
                fields.update(login="alice", password="any")
            elif fields.get("prompt") != "consent":
                break
            action = page.split('action="', 1)[1].split('"', 1)[0]
            where, page = browser.post(urllib.parse.urljoin(where, action), fields)
    except Exception as e:  # the last redirect lands on tokend, which may close first
        log(f"user agent stopped at: {e}")
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokend", required=True)
    ap.add_argument("--rotations", type=int, default=3)
    args = ap.parse_args()
    ensure_provider()
    work = tempfile.mkdtemp(prefix="tokend-oidc-")
    port = free_port()
    secret = secrets.token_urlsafe(18) + "+/:=%"
    env = dict(os.environ, PORT=str(port), CLIENT_SECRET=secret, ACCESS_TTL="5")
    server = subprocess.Popen(["node", os.path.join(NODE_DIR, "server.mjs")], cwd=NODE_DIR, env=env,
                              stdout=open(os.path.join(work, "server.log"), "w"),
                              stderr=subprocess.STDOUT)
    tokend = None
    failures = []
    try:
        wait_listening(port, server, "oidc-provider", work)
        with open(os.path.join(work, "client_secret"), "w") as f:
            f.write(secret)
        out = os.path.join(work, "out", "access_token")
        cfg = os.path.join(work, "tokend.toml")
        with open(cfg, "w") as f:
            f.write(f"""
state_dir = "{work}/state"
[credentials.oidc]
issuer = "http://127.0.0.1:{port}"
scope = "openid offline_access api:read"
client_id = "{CLIENT_ID}"
client_secret_file = "{work}/client_secret"
[credentials.oidc.refresh]
min_remaining = "1s"
[credentials.oidc.retry]
initial = "500ms"
max = "5s"
[credentials.oidc.http]
allow_insecure_http = true
[[credentials.oidc.outputs]]
path = "{out}"
""")
        code, stdout, stderr = login(args, cfg, work)
        sent_consent = "prompt=consent" in open(os.path.join(work, "authorize_url")).read()
        log(f"login: exit {code}; prompt=consent sent: {sent_consent}")
        state_file = os.path.join(work, "state", "oidc.json")
        if code != 0 or not os.path.exists(state_file):
            failures.append(f"login failed: exit {code}: {stdout}{stderr}")
            raise StopIteration
        first = read_state(state_file)["refresh_token"]
        for s in (first, secret):
            if s in stdout or s in stderr:
                failures.append("login printed a secret")

        tokend_log = os.path.join(work, "tokend.log")
        tokend = subprocess.Popen([args.tokend, "run", "-c", cfg], stderr=open(tokend_log, "w"))
        seen, inactive, checks = [], 0, 0
        deadline = time.time() + 20 + 6 * args.rotations
        while len(seen) < args.rotations + 1 and time.time() < deadline:
            try:
                token = open(out).read()
            except FileNotFoundError:
                token = None
            if token:
                checks += 1
                if not active(port, token, secret):
                    inactive += 1
                    log(f"published token #{len(seen)} is not active at the provider")
                if not seen or seen[-1] != token:
                    seen.append(token)
            time.sleep(0.25)
        tokend.send_signal(signal.SIGTERM)
        tokend_exit = tokend.wait(timeout=20)
        text = open(tokend_log).read()
        rotations = len(seen) - 1
        # The provider really is strict: the login's first refresh token, long rotated
        # away, is refused.
        status, body = post(port, "/token", {"grant_type": "refresh_token", "refresh_token": first},
                            secret)
        replay_refused = status == 400 and body.get("error") == "invalid_grant"
        log(f"rotations={rotations} token_checks={checks} inactive={inactive} "
            f"invalid_grant={text.count('invalid_grant')} tokend_exit={tokend_exit} "
            f"replay_of_first_refused={replay_refused}")
        if not sent_consent:
            failures.append("the authorization request did not carry prompt=consent")
        if rotations < args.rotations:
            failures.append(f"only {rotations} rotations")
        if inactive:
            failures.append(f"{inactive} published tokens were not active")
        if "invalid_grant" in text:
            failures.append("tokend got invalid_grant")
        if tokend_exit != 0:
            failures.append(f"tokend exited {tokend_exit}")
        if not replay_refused:
            failures.append("the provider did not refuse a replayed refresh token")
        if secret in text or first in text:
            failures.append("a secret reached tokend's log")
    except StopIteration:
        pass
    finally:
        stop(tokend, server)
    return report(log, failures, work)


if __name__ == "__main__":
    sys.exit(main())
