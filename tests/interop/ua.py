"""A scripted user agent for the interoperability tests: cookies kept, redirects
followed, forms read and submitted, as a person's browser would."""
import html.parser
import http.cookiejar
import socket
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


