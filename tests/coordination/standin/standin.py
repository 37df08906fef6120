#!/usr/bin/env python3
"""A Kubernetes API server stand-in for tokend's Kubernetes backend.

No kube-apiserver can be installed on these machines, so this serves the part of the API
tokend uses, the way the real one does it:

- objects live in a real etcd (its JSON gateway), under /registry/<resource>/<ns>/<name>
  as the apiserver keeps them, and resourceVersion is etcd's mod_revision;
- GET, list and watch by `fieldSelector=metadata.name=NAME`, POST (create, 409 when it
  exists), PUT (409 when metadata.resourceVersion is stale, as the apiserver's etcd3
  store checks it with a transaction on mod_revision), 404 for what is missing, and a
  watch from a compacted version ends with an ERROR event of code 410 (Gone);
- every request body is validated against the official OpenAPI schema of its kind (the
  `kubernetes-validate` package, strict: unknown fields are errors), MicroTimes and
  base64 data as the apiserver decodes them; a body that fails gets 422;
- bearer tokens are checked against a file read again on every request, so a test can
  rotate the token the way the kubelet does and refuse the old one;
- requests are authorized against the Role of a manifest (verbs, resources,
  resourceNames; list and watch by name need the name's fieldSelector), as RBAC does.

What it saw is served at /_standin/stats for the tests; /_standin/expire-watches ends
every open watch with 410 Gone, as the apiserver does when its watch cache moves on. It installs its dependencies
into tests/coordination/standin/.venv on first use (PyPI, pinned in requirements.txt).

Usage: standin.py --etcd URL --port N --tokens FILE [--role MANIFEST --rename A=B[,C]]
                  [--tls-dir DIR]   (DIR with server.pem and server.key)
"""
import argparse
import base64
import fcntl
import json
import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
K8S_VERSION = "1.33.0"


def ensure_venv():
    """Runs this script inside its venv, creating it on first use (one process at a
    time: several tests start stand-ins at once)."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    with open(os.path.join(HERE, ".venv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(VENV, "ready")):
            subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
            subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "-r", os.path.join(HERE, "requirements.txt")], check=True)
            open(os.path.join(VENV, "ready"), "w").close()
    os.execv(python, [python] + sys.argv)


RESOURCES = {
    # path prefix -> (resource, group/version, kind)
    "/apis/coordination.k8s.io/v1/namespaces/": ("leases", "coordination.k8s.io/v1", "Lease"),
    "/api/v1/namespaces/": ("secrets", "v1", "Secret"),
}
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


class Etcd:
    """etcd's JSON gateway: range, txn, watch."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port

    def call(self, path, body):
        import http.client
        c = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"etcd {path}: {r.status} {data[:200]!r}")
            return json.loads(data)
        finally:
            c.close()

    def get(self, key):
        a = self.call("/v3/kv/range", {"key": b64(key)})
        kvs = a.get("kvs") or []
        return (kvs[0] if kvs else None), int(a["header"]["revision"])

    def txn(self, compare, put_key, value):
        a = self.call("/v3/kv/txn", {
            "compare": [compare],
            "success": [{"request_put": {"key": b64(put_key), "value": b64(value)}}],
            "failure": [{"request_range": {"key": b64(put_key)}}],
        })
        return bool(a.get("succeeded")), int(a["header"]["revision"])


def b64(text):
    if isinstance(text, str):
        text = text.encode()
    return base64.b64encode(text).decode()


def unb64(text):
    return base64.b64decode(text or "")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.data = {"requests": 0, "invalid": 0, "invalid_reasons": [], "unconditional": 0,
                     "unauthorized": 0, "forbidden": 0, "forbidden_reasons": [], "used": [],
                     "watches": 0, "gone": 0}
        # Bumped to end every open watch with 410 Gone.
        self.expired = 0

    def add(self, key, n=1):
        with self.lock:
            self.data[key] += n

    def note(self, key, item):
        with self.lock:
            if item not in self.data[key]:
                self.data[key].append(item)


class Role:
    """The rules of a manifest's Role, as RBAC applies them to one service account."""

    def __init__(self, path, renames):
        import yaml
        self.rules = []
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") == "Role":
                    for rule in doc.get("rules", []):
                        names = [m for n in rule.get("resourceNames", []) for m in renames.get(n, [n])]
                        self.rules.append((set(rule.get("apiGroups", [])), set(rule["resources"]),
                                           set(rule["verbs"]), set(names)))
        if not self.rules:
            raise SystemExit(f"no Role in {path}")

    def allows(self, group, resource, verb, name):
        for groups, resources, verbs, names in self.rules:
            if group in groups and resource in resources and verb in verbs:
                if not names or (name is not None and name in names):
                    return True
        return False


def make_handler(etcd, tokens_file, role, stats):
    import http.server
    import kubernetes_validate

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        # ---- answers

        def send_json(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def status(self, code, reason, message):
            self.send_json(code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Failure", "message": message, "reason": reason,
                                  "code": code})

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        # ---- routing

        def route(self):
            """(resource, group/version, kind, namespace, name, query) or None."""
            url = urllib.parse.urlparse(self.path)
            query = urllib.parse.parse_qs(url.query)
            for prefix, (resource, gv, kind) in RESOURCES.items():
                if url.path.startswith(prefix):
                    parts = url.path[len(prefix):].split("/")
                    if len(parts) >= 2 and parts[1] == resource and len(parts) <= 3:
                        name = parts[2] if len(parts) == 3 else None
                        return resource, gv, kind, parts[0], name, query
            return None

        def authorized(self, group, resource, verb, name):
            stats.add("requests")
            auth = self.headers.get("Authorization", "")
            with open(tokens_file) as f:
                valid = {line.strip() for line in f if line.strip()}
            if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in valid:
                stats.add("unauthorized")
                self.status(401, "Unauthorized", "Unauthorized")
                return False
            if role and not role.allows(group, resource, verb, name):
                stats.add("forbidden")
                stats.note("forbidden_reasons", f"{verb} {resource} {name}")
                self.status(403, "Forbidden",
                            f'{resource} "{name}" is forbidden: cannot {verb} {resource}')
                return False
            stats.note("used", f"{verb} {resource}")
            return True

        def do_GET(self):
            if self.path == "/_standin/stats":
                with stats.lock:
                    return self.send_json(200, stats.data)
            if self.path == "/_standin/expire-watches":
                stats.expired += 1
                return self.send_json(200, {"expired": stats.expired})
            r = self.route()
            if not r:
                return self.status(404, "NotFound", "the server could not find the requested resource")
            resource, gv, kind, ns, name, query = r
            group = gv.split("/")[0] if "/" in gv else ""
            if name:
                if not self.authorized(group, resource, "get", name):
                    return
                kv, _ = etcd.get(key(resource, ns, name))
                if not kv:
                    return self.status(404, "NotFound", f'{resource} "{name}" not found')
                return self.send_json(200, decode(kv))
            selector = (query.get("fieldSelector") or [""])[0]
            m = re.fullmatch(r"metadata\.name=([a-z0-9.-]+)", selector)
            watch = (query.get("watch") or [""])[0] in ("1", "true")
            verb = "watch" if watch else "list"
            # RBAC: list and watch of named objects need the name's field selector.
            if not self.authorized(group, resource, verb, m.group(1) if m else None):
                return
            if not m:
                return self.status(400, "BadRequest", "tokend's stand-in serves only fieldSelector=metadata.name=NAME")
            name = m.group(1)
            if watch:
                return self.watch(resource, ns, name, (query.get("resourceVersion") or ["0"])[0])
            kv, revision = etcd.get(key(resource, ns, name))
            self.send_json(200, {"kind": kind + "List", "apiVersion": gv,
                                 "metadata": {"resourceVersion": str(revision)},
                                 "items": [decode(kv)] if kv else []})

        def do_POST(self):
            self.write("create")

        def do_PUT(self):
            self.write("update")

        def write(self, verb):
            r = self.route()
            if not r:
                return self.status(404, "NotFound", "the server could not find the requested resource")
            resource, gv, kind, ns, name, _ = r
            group = gv.split("/")[0] if "/" in gv else ""
            data = self.body()
            if (verb == "create") != (name is None):
                return self.status(405, "MethodNotAllowed", f"{verb} is not allowed here")
            if not self.authorized(group, resource, verb, name):
                return
            try:
                obj = json.loads(data)
            except ValueError as e:
                stats.add("invalid")
                return self.status(400, "BadRequest", f"not JSON: {e}")
            problem = validate(kubernetes_validate, obj, gv, kind)
            meta = obj.get("metadata") or {}
            if not problem and name is not None and meta.get("name") != name:
                problem = "metadata.name does not match the name in the URL"
            if not problem and meta.get("namespace") not in (None, ns):
                problem = "metadata.namespace does not match the namespace in the URL"
            if not problem and verb == "create" and meta.get("resourceVersion"):
                problem = "resourceVersion should not be set on objects to be created"
            if problem:
                stats.add("invalid")
                stats.note("invalid_reasons", problem[:300])
                return self.status(422, "Invalid", f"{kind} is invalid: {problem[:300]}")
            name = meta["name"]
            k = key(resource, ns, name)
            current, _ = etcd.get(k)
            rv = meta.get("resourceVersion", "")
            if verb == "update" and not current:
                return self.status(404, "NotFound", f'{resource} "{name}" not found')
            if verb == "update" and not rv:
                stats.add("unconditional")
            # What the apiserver sets itself; the rest is stored as sent.
            old = decode(current)["metadata"] if current else {}
            meta = dict(meta)
            meta.pop("resourceVersion", None)
            meta["namespace"] = ns
            meta["uid"] = old.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = old.get("creationTimestamp") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            obj["metadata"] = meta
            value = json.dumps(obj)
            if verb == "create":
                compare = {"key": b64(k), "target": "CREATE", "create_revision": "0"}
            elif rv:
                compare = {"key": b64(k), "target": "MOD", "mod_revision": rv}
            else:
                compare = {"key": b64(k), "target": "CREATE", "result": "GREATER", "create_revision": "0"}
            ok, revision = etcd.txn(compare, k, value)
            if not ok and verb == "create":
                return self.status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            if not ok:
                return self.status(409, "Conflict",
                                   f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; please apply your changes to the latest version and try again')
            obj["metadata"]["resourceVersion"] = str(revision)
            self.send_json(201 if verb == "create" else 200, obj)

        # ---- watch

        def watch(self, resource, ns, name, rv):
            stats.add("watches")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            import http.client
            c = http.client.HTTPConnection(etcd.host, etcd.port, timeout=None)
            k = key(resource, ns, name)
            start = int(rv) + 1 if rv.isdigit() else 0
            c.request("POST", "/v3/watch", json.dumps({"create_request": {
                "key": b64(k), "start_revision": str(start), "prev_kv": True}}),
                {"Content-Type": "application/json"})
            answer = c.getresponse()
            lines = queue.Queue()

            def pump():
                try:
                    while True:
                        line = answer.readline()
                        lines.put(line)
                        if not line:
                            return
                except (OSError, ValueError, http.client.HTTPException):
                    lines.put(b"")
            threading.Thread(target=pump, daemon=True).start()
            try:
                expired = stats.expired
                while True:
                    if stats.expired != expired:
                        # As the apiserver's watch cache does when it drops old versions.
                        return self.gone(rv, "the watch cache was reset")
                    try:
                        line = lines.get(timeout=0.2)
                    except queue.Empty:
                        # Nothing from etcd: is the client still there?
                        ready, _, _ = select.select([self.connection], [], [], 0)
                        if ready and self.connection.recv(1, socket.MSG_PEEK) == b"":
                            self.close_connection = True
                            return
                        continue
                    if not line:
                        # etcd ended the watch: end ours; the connection stays usable.
                        return self.end_chunks()
                    msg = json.loads(line).get("result", {})
                    if msg.get("compact_revision") and msg.get("canceled"):
                        return self.gone(rv, f"compacted at {msg['compact_revision']}")
                    for ev in msg.get("events") or []:
                        kv = ev["kv"]
                        if ev.get("type") == "DELETE":
                            obj = decode(ev.get("prev_kv"))
                            obj["metadata"]["resourceVersion"] = kv["mod_revision"]
                            self.event({"type": "DELETED", "object": obj})
                        else:
                            kind = "ADDED" if kv.get("create_revision") == kv.get("mod_revision") else "MODIFIED"
                            self.event({"type": kind, "object": decode(kv)})
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True
                return
            finally:
                # Unblock the pump's read before closing: closing a reader another
                # thread is blocked in waits for that read to end.
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()

        def gone(self, rv, why):
            """Ends a watch with 410 Gone: the client must list again."""
            stats.add("gone")
            self.event({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "Expired", "code": 410, "message": f"too old resource version: {rv} ({why})"}})
            self.end_chunks()

        def event(self, obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def end_chunks(self):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def key(resource, ns, name):
    return f"/registry/{resource}/{ns}/{name}"


def decode(kv):
    obj = json.loads(unb64(kv["value"]))
    obj["metadata"]["resourceVersion"] = str(kv["mod_revision"])
    return obj


def validate(kv, obj, gv, kind):
    """The first problem with `obj` as the apiserver would decode it, or None."""
    if obj.get("apiVersion") != gv or obj.get("kind") != kind:
        return f"apiVersion/kind must be {gv}/{kind}"
    try:
        kv.validate(obj, K8S_VERSION, strict=True)
    except kv.ValidationError as e:
        return f"schema: {e.message}"
    except Exception as e:  # the schema itself could not be used: say so, refuse
        return f"schema: {type(e).__name__}: {e}"
    if kind == "Lease":
        for field in ("acquireTime", "renewTime"):
            t = (obj.get("spec") or {}).get(field)
            if t is not None and not MICRO_TIME.match(t):
                return f"spec.{field}: {t!r} is not an RFC 3339 time"
    if kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except ValueError:
                return f"data[{k}]: not base64"
    return None


def main():
    ensure_venv()
    import http.server
    import ssl
    p = argparse.ArgumentParser()
    p.add_argument("--etcd", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--role")
    p.add_argument("--rename", action="append", default=[])
    p.add_argument("--tls-dir")
    a = p.parse_args()
    # OLD=NEW[,NEW...]: the manifest's object names, as the test's credentials name them.
    renames = {old: new.split(",") for old, new in (r.split("=", 1) for r in a.rename)}
    role = Role(a.role, renames) if a.role else None
    stats = Stats()
    if role:
        stats.data["granted"] = sorted({f"{v} {r}" for _, rs, vs, _ in role.rules for r in rs for v in vs})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port),
                                             make_handler(Etcd(a.etcd), a.tokens, role, stats))
    server.daemon_threads = True
    if a.tls_dir:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(a.tls_dir, "server.pem"), os.path.join(a.tls_dir, "server.key"))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"stand-in listening on {a.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
