"""A receiver for testing alert webhooks: verifies each delivery's signature and prints it (stdlib only).

    $ WEBHOOK_SECRET=s3cret python -m driftloop.alerts.receiver 9000
    # driftloop.yaml: alerts: {webhooks: [{name: local, url: "http://127.0.0.1:9000/", secret_env: WEBHOOK_SECRET}]}

The README shows this file as the copy-paste receiver; `verify` is the documented recipe.
"""

import hashlib
import hmac
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def verify(secret: str, headers, body: bytes, now: float | None = None, window_s: int = 300) -> bool:
    ts = headers.get("X-Driftloop-Timestamp", "")
    if not ts.isdigit() or abs((time.time() if now is None else now) - int(ts)) > window_s:
        return False  # missing, or outside the replay window
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Driftloop-Signature", "").encode(), f"v1={mac}".encode())


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = verify(os.environ["WEBHOOK_SECRET"], self.headers, body)
        self.send_response(204 if ok else 401)
        self.end_headers()
        print(
            "verified" if ok else "REJECTED",
            self.headers.get("X-Driftloop-Event"),
            self.headers.get("X-Driftloop-Delivery"),
            body.decode(errors="replace"),
            flush=True,
        )


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 9000), Receiver).serve_forever()
