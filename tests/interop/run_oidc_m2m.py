#!/usr/bin/env python3
"""The client-credentials grant against a real OpenID provider (design.md §12).

node-oidc-provider (pinned, as for run_oidc.py) runs on 127.0.0.1 with two machine
clients and 5 s access tokens: `m2m-basic` (client_secret_basic; the secret holds
`+ / : = %`) and `m2m-jwt` (private_key_jwt with an EC P-256 key made here by
openssl). One `tokend run` holds both:

1. the jwt credential starts with a key the provider does not know: the provider
   refuses it (invalid_client), tokend blocks it and does not retry;
2. the right key is written to the key file: tokend resumes by itself;
3. both credentials then rotate for SECONDS seconds; every published token is polled
   and must be active per the provider's introspection endpoint; neither secret nor
   key may reach the log.

Usage: run_oidc_m2m.py [--tokend PATH] [--seconds N]
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

from helpers import free_port, report, stop, wait_listening  # noqa: E402 (beside this script)
from run_oidc import NODE_DIR, ensure_provider  # noqa: E402

LIFETIME = 5


def log(msg):
    print(f"[oidc-m2m] {msg}", flush=True)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ec_key(path):
    """A PKCS#8 P-256 private key at `path`; returns the path of its public key."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)
    openssl("pkey", "-in", path, "-pubout", "-out", path + ".pub")
    return path + ".pub"


def introspect(port, token, secret):
    q = urllib.parse.quote_plus
    auth = base64.b64encode(f"{q('m2m-basic')}:{q(secret)}".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/token/introspection",
        data=urllib.parse.urlencode({"token": token}).encode(),
        headers={"Authorization": "Basic " + auth,
                 "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        log(f"introspection: HTTP {e.code}: {e.read()[:200]!r}")
        return False, None
    return body.get("active") is True, body.get("client_id")


def config(work, port):
    creds = ""
    for name, auth in [
        ("basic", f'client_secret_file = "{work}/m2m_secret"'),
        ("jwt", f'client_auth = "private_key_jwt"\nclient_assertion_key_file = "{work}/m2m.key"'),
    ]:
        creds += f"""
[credentials.{name}]
grant = "client_credentials"
issuer = "http://127.0.0.1:{port}"
client_id = "m2m-{name}"
scope = "api:read"
{auth}
[credentials.{name}.refresh]
min_remaining = "1s"
[credentials.{name}.retry]
initial = "500ms"
max = "3s"
[credentials.{name}.http]
allow_insecure_http = true
[[credentials.{name}.outputs]]
path = "{work}/out/{name}"
"""
    path = os.path.join(work, "tokend.toml")
    with open(path, "w") as f:
        f.write(f'state_dir = "{work}/state"\n{creds}')
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokend", required=True)
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    ensure_provider()
    work = tempfile.mkdtemp(prefix="tokend-oidc-m2m-")
    port = free_port()
    secret = secrets.token_urlsafe(18) + "+/:=%"
    with open(os.path.join(work, "m2m_secret"), "w") as f:
        f.write(secret)
    key = os.path.join(work, "m2m.key")
    public = ec_key(os.path.join(work, "right.key"))
    ec_key(key)  # a key the provider does not know, to begin with
    env = dict(os.environ, PORT=str(port), CLIENT_SECRET=secrets.token_urlsafe(18),
               ACCESS_TTL=str(LIFETIME), M2M_SECRET=secret, M2M_PUBLIC_KEY=public)
    server = subprocess.Popen(["node", os.path.join(NODE_DIR, "server.mjs")], cwd=NODE_DIR,
                              env=env, stdout=open(os.path.join(work, "server.log"), "w"),
                              stderr=subprocess.STDOUT)
    tokend = None
    failures = []
    try:
        wait_listening(port, server, "oidc-provider", work)
        cfg = config(work, port)
        check = subprocess.run([args.tokend, "check", "-c", cfg], capture_output=True, text=True)
        if check.returncode != 0:
            failures.append(f"check failed: {check.stdout}{check.stderr}")
            raise StopIteration
        tokend_log = os.path.join(work, "tokend.log")
        tokend = subprocess.Popen([args.tokend, "run", "-c", cfg], stderr=open(tokend_log, "w"))

        # 1. The unknown key: refused, blocked, not retried.
        deadline = time.time() + 20
        text = ""
        while time.time() < deadline and "refreshing stopped" not in text:
            time.sleep(0.25)
            text = open(tokend_log).read()
        blocked = "refreshing stopped" in text and "invalid_client" in text
        log(f"unknown key: blocked with invalid_client: {blocked}")
        if not blocked:
            failures.append("the unknown key did not block the credential with invalid_client")
        time.sleep(2)
        refusals = open(tokend_log).read().count("invalid_client")

        # 2. The right key: resumed without a signal.
        with open(public.replace(".pub", "")) as f:
            right = f.read()
        tmp = key + ".new"
        with open(tmp, "w") as f:
            f.write(right)
        os.chmod(tmp, 0o600)
        os.rename(tmp, key)
        resumed_at = time.time()

        # 3. Both rotate; every published token is active.
        seen = {"basic": [], "jwt": []}
        inactive, checks, wrong_client = 0, 0, 0
        end = resumed_at + args.seconds
        while time.time() < end:
            for name in seen:
                try:
                    token = open(os.path.join(work, "out", name)).read()
                except FileNotFoundError:
                    continue
                if not token:
                    continue
                checks += 1
                active, client = introspect(port, token, secret)
                if not active:
                    inactive += 1
                    log(f"{name}: published token #{len(seen[name])} is not active")
                elif client != f"m2m-{name}":
                    wrong_client += 1
                if not seen[name] or seen[name][-1] != token:
                    seen[name].append(token)
            time.sleep(0.25)
        tokend.send_signal(signal.SIGTERM)
        tokend_exit = tokend.wait(timeout=20)
        text = open(tokend_log).read()
        resumed = "assertion key changed; resuming" in text
        refused_after = text.count("invalid_client") - refusals
        rotations = {name: len(tokens) - 1 for name, tokens in seen.items()}
        log(f"seconds={args.seconds} rotations={rotations} token_checks={checks} "
            f"inactive={inactive} wrong_client={wrong_client} resumed_by_file={resumed} "
            f"invalid_client_after_fix={refused_after} tokend_exit={tokend_exit}")
        # A 5 s token is refreshed at about 3.75 s: a minute holds 15 or so, less the
        # up to 5 s a blocked credential takes to notice its key file changed.
        least = int((args.seconds - 5) / LIFETIME)
        for name, n in rotations.items():
            if n < least:
                failures.append(f"{name}: only {n} rotations in {args.seconds} s")
        if inactive:
            failures.append(f"{inactive} published tokens were not active")
        if wrong_client:
            failures.append(f"{wrong_client} tokens belonged to the other client")
        if refusals > 2 or refused_after:
            failures.append(f"invalid_client logged {refusals} times, then {refused_after}")
        if not resumed:
            failures.append("the jwt credential did not resume when its key file changed")
        if tokend_exit != 0:
            failures.append(f"tokend exited {tokend_exit}")
        key_lines = [line for line in right.splitlines() if not line.startswith("-----")]
        if secret in text or any(line in text for line in key_lines):
            failures.append("a secret or the key reached tokend's log")
    except StopIteration:
        pass
    finally:
        stop(tokend, server)
    return report(log, failures, work)


if __name__ == "__main__":
    sys.exit(main())
