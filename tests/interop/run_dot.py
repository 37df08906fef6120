#!/usr/bin/env python3
"""tokend against a real third-party OAuth server: django-oauth-toolkit (pinned).

Installs the server in a venv (tests/interop/.venv), runs it on 127.0.0.1 with
refresh-token rotation, reuse protection on (no grace) and 5-second access tokens,
obtains the first refresh token, then runs `tokend run` until it has rotated at least
ROTATIONS times. The published access token is presented to a protected view of the
server every 250 ms and must be accepted, except in the moment between the server
rotating (django-oauth-toolkit revokes the old access token then) and tokend writing
the new one: such a read counts as "superseded" when the next token is published and
accepted within 3 s, and as a failure otherwise.

The first refresh token comes, with --mode password, from the server's password grant
(written to the bootstrap file); with --mode login, from `tokend login`, driven by a
scripted user agent through the server's real pages: Django's login form, then
django-oauth-toolkit's consent page (first "Cancel", which tokend must report as
access_denied, then "Authorize"). Login mode finds the endpoints by discovery (the
server's OpenID Connect metadata) and uses PKCE S256.

The client secret holds `+ / : = %`, so `client_auth = "basic"` must form-encode it
the way RFC 6749 §2.3.1 says (the server decodes with unquote_plus).

Usage: run_dot.py [--tokend PATH] [--rotations N] [--mode password|login]
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

from helpers import Browser, free_port, page_form, read_state, wait_listening  # noqa: E402 (beside this script)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VENV = os.environ.get("DOT_VENV", os.path.join(HERE, ".venv"))
PY = os.path.join(VENV, "bin", "python")
CLIENT_ID = "tokend-interop"


def log(msg):
    print(f"[interop] {msg}", flush=True)


def ensure_venv():
    stamp = os.path.join(VENV, "requirements.txt")
    wanted = open(os.path.join(HERE, "requirements.txt")).read()
    if os.path.exists(stamp) and open(stamp).read() == wanted:
        return
    log(f"installing the pinned server into {VENV}")
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                    os.path.join(HERE, "requirements.txt")], check=True)
    with open(stamp, "w") as f:
        f.write(wanted)


def basic(client_id, secret):
    q = urllib.parse.quote_plus
    return "Basic " + base64.b64encode(f"{q(client_id)}:{q(secret)}".encode()).decode()


def post_token(port, form, secret):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/o/token/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": basic(CLIENT_ID, secret),
                 "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def accepted(port, token):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/hello",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def tokend_login(args, cfg, env, browser, password, allow):
    """Runs `tokend login`, plays the user in the browser; returns (exit, stdout, stderr).
    tokend listens on any free loopback port: the server matches the registered
    http://127.0.0.1/callback whatever the port, as RFC 8252 §7.3 says."""
    login = subprocess.Popen([args.tokend, "login", "dot", "-c", cfg, "--timeout", "60s"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = login.stdout.readline().strip()
    where, page = browser.get(url)
    if "/accounts/login/" in where:
        fields = page_form(page)
        fields.update(username="alice", password=password)
        where, page = browser.post(where, fields)
    if "authorizationForm" not in page:
        login.kill()
        raise SystemExit(f"expected the consent page, got {where}:\n{page[:500]}")
    fields = page_form(page)
    if allow:
        fields["allow"] = "Authorize"
    # The consent form posts back to the page it is on; the server then redirects the
    # browser to tokend's loopback listener.
    try:
        where, page = browser.post(where, fields)
    except urllib.error.URLError as e:
        log(f"browser: {e}")
    out, err = login.communicate(timeout=30)
    return login.returncode, out, err


def run_logins(args, cfg, env, password, work):
    """Cancel once (access_denied), then authorize; returns what went wrong."""
    failures = []
    browser = Browser()
    state_file = os.path.join(work, "state", "dot.json")
    code, out, err = tokend_login(args, cfg, env, browser, password, allow=False)
    log(f"login, consent cancelled: exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    if code != 77 or "the authorization was denied" not in err:
        failures.append(f"a cancelled consent gave exit {code}: {err}")
    if os.path.exists(state_file):
        failures.append("a cancelled login wrote a state file")
    code, out, err = tokend_login(args, cfg, env, browser, password, allow=True)
    log(f"login, authorized: exit {code}")
    for line in out.strip().splitlines():
        log("  " + line)
    if code != 0 or "logged in: credential dot" not in out:
        failures.append(f"login failed: exit {code}: {out}{err}")
        return failures
    state = read_state(state_file)
    if oct(os.stat(state_file).st_mode & 0o777) != "0o600":
        failures.append("the state file is not 0600")
    for secret_name in ("refresh_token", "access_token"):
        if state[secret_name] in out + err:
            failures.append(f"login printed the {secret_name}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokend", default=os.path.join(REPO, "target", "debug", "tokend"))
    ap.add_argument("--rotations", type=int, default=6)
    ap.add_argument("--mode", choices=["password", "login"], default="password")
    args = ap.parse_args()
    ensure_venv()
    work = tempfile.mkdtemp(prefix="tokend-dot-")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="dot_settings", PYTHONPATH=os.path.join(HERE, "dot"),
               DOT_DB=os.path.join(work, "db.sqlite3"))
    env.pop("RUST_LOG", None)
    if args.mode == "login":
        # OpenID Connect discovery needs a signing key; the test makes a fresh one.
        key = subprocess.run([PY, "-c", "from jwcrypto import jwk; "
                              "print(jwk.JWK.generate(kty='RSA', size=2048).export_to_pem(private_key=True, password=None).decode())"],
                             capture_output=True, text=True, check=True).stdout
        env["DOT_OIDC_KEY"] = key
    django = [PY, "-m", "django"]
    subprocess.run(django + ["migrate", "-v", "0"], env=env, check=True)
    secret = secrets.token_urlsafe(18) + "+/:=%"
    password = secrets.token_urlsafe(12)
    grant = "password" if args.mode == "password" else "authorization-code"
    port = free_port()
    subprocess.run(django + ["shell", "-c", f"""
from django.contrib.auth.models import User
from oauth2_provider.models import Application
u = User.objects.create_user("alice", password={password!r})
Application.objects.create(name="tokend", client_id={CLIENT_ID!r}, client_secret={secret!r},
    client_type="confidential", authorization_grant_type={grant!r}, user=u,
    redirect_uris="http://127.0.0.1/callback", skip_authorization=False)
"""], env=env, check=True)

    server = subprocess.Popen(django + ["runserver", f"127.0.0.1:{port}", "--noreload"], env=env,
                              stdout=open(os.path.join(work, "server.log"), "w"), stderr=subprocess.STDOUT)
    tokend = None
    try:
        wait_listening(port, server, "the django-oauth-toolkit server", work)

        with open(os.path.join(work, "client_secret"), "w") as f:
            f.write(secret)
        out = os.path.join(work, "out", "access_token")
        if args.mode == "password":
            status, body = post_token(port, {"grant_type": "password", "username": "alice",
                                             "password": password, "scope": "read write"}, secret)
            if status != 200:
                raise SystemExit(f"password grant failed: HTTP {status}")
            bootstrap = json.loads(body)["refresh_token"]
            log(f"django-oauth-toolkit on 127.0.0.1:{port}; first refresh token from the password grant")
            with open(os.path.join(work, "bootstrap"), "w") as f:
                f.write(bootstrap + "\n")
            server_keys = f'''token_url = "http://127.0.0.1:{port}/o/token/"
refresh_token_file = "{work}/bootstrap"'''
        else:
            server_keys = f'issuer = "http://127.0.0.1:{port}/o"\nscope = "read write"'
        cfg = os.path.join(work, "tokend.toml")
        with open(cfg, "w") as f:
            f.write(f"""
state_dir = "{work}/state"
[credentials.dot]
{server_keys}
client_id = "{CLIENT_ID}"
client_secret_file = "{work}/client_secret"
client_auth = "basic"
[credentials.dot.refresh]
min_remaining = "1s"
[credentials.dot.retry]
initial = "500ms"
max = "5s"
[credentials.dot.http]
allow_insecure_http = true
[[credentials.dot.outputs]]
path = "{out}"
""")
        login_failures = []
        if args.mode == "login":
            login_failures = run_logins(args, cfg, env, password, work)
            state_file = os.path.join(work, "state", "dot.json")
            if not os.path.exists(state_file):
                for f in login_failures:
                    log("FAIL: " + f)
                print("interop: 0 passed, 1 failed")
                return 1
            bootstrap = read_state(state_file)["refresh_token"]
            log(f"django-oauth-toolkit on 127.0.0.1:{port}; first refresh token from tokend login")
        tokend_log = os.path.join(work, "tokend.log")
        tokend = subprocess.Popen([args.tokend, "run", "-c", os.path.join(work, "tokend.toml")],
                                  stderr=open(tokend_log, "w"), env=env)
        def published():
            try:
                return open(out).read()
            except FileNotFoundError:
                return None

        seen, rejected, superseded, checks = [], 0, 0, 0
        deadline = time.time() + 30 + 6 * args.rotations
        while len(seen) < args.rotations + 1 and time.time() < deadline:
            token = published()
            if token:
                checks += 1
                if not accepted(port, token):
                    # django-oauth-toolkit revokes the old access token the moment it
                    # rotates, before its answer reaches tokend: a read in that window
                    # sees a revoked token until the new one is written. That is the
                    # server's doing; a token still published after it is tokend's.
                    replaced = time.time() + 3
                    while published() == token and time.time() < replaced:
                        time.sleep(0.05)
                    newer = published()
                    if newer != token and newer and accepted(port, newer):
                        superseded += 1
                        log(f"published token #{len(seen)} revoked while its replacement was in flight")
                    else:
                        rejected += 1
                        log(f"published token #{len(seen)} rejected by the server")
                if not seen or seen[-1] != token:
                    seen.append(token)
            time.sleep(0.25)
        tokend.send_signal(signal.SIGTERM)
        code = tokend.wait(timeout=20)
        text = open(tokend_log).read()
        rotations = len(seen) - 1
        invalid_grant = text.count("invalid_grant")

        # Sanity of the setup: the server really enforces reuse protection.
        status, body = post_token(port, {"grant_type": "refresh_token", "refresh_token": bootstrap}, secret)
        reuse_refused = status in (400, 401) and "invalid_grant" in body

        log(f"rotations={rotations} token_checks={checks} rejected={rejected} superseded={superseded} "
            f"invalid_grant={invalid_grant} tokend_exit={code} replay_of_bootstrap_refused={reuse_refused}")
        failures = list(login_failures)
        if rotations < args.rotations:
            failures.append(f"only {rotations} rotations")
        if rejected:
            failures.append(f"{rejected} published tokens rejected")
        if invalid_grant:
            failures.append("tokend saw invalid_grant")
        if code != 0:
            failures.append(f"tokend exited {code}")
        if not reuse_refused:
            failures.append("the server did not refuse a replayed refresh token (setup wrong)")
        for f in failures:
            log("FAIL: " + f)
        if failures:
            log("tokend log:\n" + text[-4000:])
        print(f"interop: {0 if failures else 1} passed, {1 if failures else 0} failed")
        return 1 if failures else 0
    finally:
        if tokend and tokend.poll() is None:
            tokend.kill()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
