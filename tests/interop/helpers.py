"""What the interoperability scripts share: a scripted user agent (cookies kept,
redirects followed, forms read and submitted, as a person's browser would), a free
loopback port, and waiting for a server to listen."""
import html.parser
import http.cookiejar
import socket
import time
import urllib.parse
import urllib.request


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


