"""What the interoperability scripts share: a scripted user agent (cookies kept,
redirects followed, forms read and submitted, as a person's browser would), a free
loopback port, and waiting for a server to listen."""
import html.parser
import http.cookiejar
import json
import signal
import socket
import struct
import time
import urllib.parse
import urllib.request
import zlib


def read_state(path):
    """A tokend state file's record, either format: format 2 is two slots ("TKS2",
    sequence, length, CRC-32, JSON), the valid one with the higher sequence wins;
    format 1 is the JSON alone."""
    with open(path, "rb") as f:
        data = f.read()
    half = len(data) // 2
    if not (data.startswith(b"TKS2") or data[half:].startswith(b"TKS2")):
        return json.loads(data)
    best = None
    for slot in (data[:half], data[half:]):
        if slot[:4] != b"TKS2":
            continue
        seq, length, crc = struct.unpack_from("<QII", slot, 4)
        record = slot[20:20 + length]
        if zlib.crc32(slot[4:16] + record) == crc and (best is None or seq > best[0]):
            best = (seq, record)
    if best is None:
        raise ValueError(f"{path}: neither slot is valid")
    return json.loads(best[1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, server, what, work, seconds=30):
    """Waits until `port` accepts connections; exits if `server` dies or time runs out."""
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"{what} did not start; see {work}")
            time.sleep(0.2)


class FormParser(html.parser.HTMLParser):
    """The inputs of one page's forms: what a browser would submit."""

    def __init__(self):
        super().__init__()
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and a.get("type") != "submit":
            self.fields[a["name"]] = a.get("value") or ""


def page_form(html_text):
    p = FormParser()
    p.feed(html_text)
    return p.fields


class Browser:
    """A scripted user agent: cookies, redirects followed, forms submitted."""

    def __init__(self):
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, url):
        with self.opener.open(url, timeout=20) as r:
            return r.geturl(), r.read().decode()

    def post(self, url, fields):
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(urllib.request.Request(url, data=data), timeout=20) as r:
            return r.geturl(), r.read().decode()


def stop(tokend, server):
    """Ends a run: tokend killed if still running, the provider stopped."""
    if tokend and tokend.poll() is None:
        tokend.kill()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)


def report(log, failures, work):
    """Prints the failures and the closing line; the exit code."""
    for f in failures:
        log("FAIL: " + f)
    if failures:
        log(f"logs kept in {work}")
        print("interop: 0 passed, 1 failed")
        return 1
    print("interop: 1 passed, 0 failed")
    return 0

