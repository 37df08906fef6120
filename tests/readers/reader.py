"""Call an API with tokend's token, re-reading token.json only when it nears expiry."""
import json
import os
import time
import urllib.request
from datetime import datetime, timedelta, timezone

TOKEN_JSON = os.environ.get("TOKEN_JSON", "/run/tokend/blnk/token.json")
MARGIN = timedelta(seconds=60)
_cached = None  # (token, expires_at)


def access_token():
    global _cached
    if _cached is None or datetime.now(timezone.utc) >= _cached[1] - MARGIN:
        for _ in range(300):  # up to 30 s for tokend's first write
            try:
                with open(TOKEN_JSON) as f:
                    doc = json.load(f)
                break
            except FileNotFoundError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"no token at {TOKEN_JSON}")
        expires = datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00"))
        _cached = (doc["access_token"], expires)
    return _cached[0]


request = urllib.request.Request(
    os.environ["API_URL"], headers={"Authorization": f"Bearer {access_token()}"}
)
with urllib.request.urlopen(request) as response:
    print(response.read().decode())
