"""Sign a self-hosted Cog runtime's webhooks as Replicate does, and pass them on to a receiver.

A model run with ``cog serve`` (or its image run anywhere) sends webhooks unsigned, so a receiver that
verifies signatures, as ``examples/webhook_receiver.py`` and the Worker in ``examples/worker`` do, answers
each one with 401. For a local test, point the runtime's webhook at this relay: it signs each body with the
Standard Webhooks scheme (a new ``webhook-id``, the current ``webhook-timestamp``, ``v1,<base64 HMAC-SHA256
of id.timestamp.body>``) and forwards it, answering the runtime with the receiver's status::

    export REPLICATE_WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64)
    python examples/signing_relay.py --port 5055 --target http://127.0.0.1:8000/webhooks/replicate
    # the runtime's prediction request: "webhook": "http://127.0.0.1:5055/"

Standard library only. Each delivery gets a fresh ``webhook-id``, so a retry by the runtime is a new
delivery to the receiver; Replicate itself keeps the id across retries.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("signing_relay")


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for ``body`` with the secret ``whsec_<base64 key>``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


class SigningRelay:
    """An HTTP server thread on ``host:port`` that signs each POST and forwards it to ``target``.

    ``forwarded`` lists ``(time.monotonic() when forwarded, body, receiver's status, receiver's reply)``.
    """

    def __init__(self, target: str, secret: str, host: str = "127.0.0.1", port: int = 0):
        if not secret.startswith("whsec_"):
            raise ValueError("the secret must look like whsec_<base64>")
        self.target, self.secret = target, secret
        self.forwarded: list[tuple[float, bytes, int, bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def forward(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        """Sign ``body``, POST it to the target; (its status, its reply), 502 if unreachable."""
        headers = signed_headers(self.secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
        request = urllib.request.Request(
            self.target, data=body, method="POST", headers={**headers, "Content-Type": content_type}
        )
        sent_at = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, reply = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, reply = error.code, error.read()
        except OSError as error:
            status, reply = 502, f"relay: {error}".encode()
        with self._lock:
            self.forwarded.append((sent_at, body, status, reply))
        if status >= 300:
            log.warning("receiver answered %d: %s", status, reply[:200].decode(errors="replace"))
        return status, reply

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                log.debug(format, *args)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = relay.forward(body, self.headers.get("Content-Type", "application/json"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", required=True, help="the receiver's webhook URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    args = parser.parse_args(argv)
    secret = os.environ.get("REPLICATE_WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        parser.error("set REPLICATE_WEBHOOK_SECRET=whsec_... (the receiver's secret)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    relay = SigningRelay(args.target, secret, args.host, args.port)
    log.info("signing webhooks at %s for %s", relay.url, args.target)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
