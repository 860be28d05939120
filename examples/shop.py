"""The outside world of the examples: a tiny payments-and-shipping HTTP service on loopback.

``aion dev`` (and the demo) run it as a process of its own (``python -m examples.shop``) and
give the workers its address in ``AION_EXAMPLES_SHOP_URL``; where no address is given (a
test stack of the ``aion.testing`` plugin), :func:`shop_url` starts one inside the worker.

- ``POST /charges`` ``{"order_id", "amount", "idempotency_key", "fail_first": n}`` charges an
  order: the first ``n`` requests for one idempotency key answer ``503`` (a flaky provider the
  activity's retries absorb), an amount of 0 or less ``402`` (declined for good); a repeated
  key after success returns the same receipt (the charge happens once).
- ``POST /shipments`` ``{"order_id", "receipt", "idempotency_key"}`` books a parcel, likewise
  idempotent.
- ``GET /health`` answers ``{"ok": true}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SHOP_URL_ENV", "ShopServer", "main", "shop_url"]

SHOP_URL_ENV = "AION_EXAMPLES_SHOP_URL"
_HTTP_OK, _DECLINED, _UNAVAILABLE, _BAD_REQUEST, _NOT_FOUND = 200, 402, 503, 400, 404


class _Ledger:
    """What the shop remembers: requests per key, and each key's answer once it succeeded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.done: dict[str, dict[str, Any]] = {}


def _code(prefix: str, *parts: object) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"{prefix}{digest[:10].upper()}"


class _Handler(BaseHTTPRequestHandler):
    ledger: _Ledger

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the services log what matters."""

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(_HTTP_OK, {"ok": True})
        else:
            self._answer(_NOT_FOUND, {"error": f"no such resource {self.path}"})

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            key = str(body["idempotency_key"])
        except (ValueError, KeyError, TypeError) as err:
            self._answer(_BAD_REQUEST, {"error": f"bad request: {err!r}"})
            return
        if self.path == "/charges":
            self._charge(key, body)
        elif self.path == "/shipments":
            self._ship(key, body)
        else:
            self._answer(_NOT_FOUND, {"error": f"no such resource {self.path}"})

    def _charge(self, key: str, body: dict[str, Any]) -> None:
        ledger = self.ledger
        with ledger.lock:
            if key in ledger.done:
                self._answer(_HTTP_OK, ledger.done[key])
                return
            ledger.requests[key] += 1
            attempt = ledger.requests[key]
            if attempt <= int(body.get("fail_first", 0)):
                self._answer(_UNAVAILABLE, {"error": f"payment provider busy (request {attempt})"})
                return
            if int(body.get("amount", 0)) <= 0:
                self._answer(_DECLINED, {"error": f"amount {body.get('amount')} declined"})
                return
            receipt = {
                "receipt": _code("RCPT-", body.get("order_id"), key),
                "amount": body["amount"],
                "requests": attempt,
            }
            ledger.done[key] = receipt
        self._answer(_HTTP_OK, receipt)

    def _ship(self, key: str, body: dict[str, Any]) -> None:
        ledger = self.ledger
        with ledger.lock:
            shipment = ledger.done.setdefault(
                key,
                {"order_id": body.get("order_id"), "tracking": _code("TRK-", body.get("receipt"))},
            )
        self._answer(_HTTP_OK, shipment)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ShopServer:
    """The shop on ``127.0.0.1:port`` (0: any free port), served from a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        handler = type("ShopHandler", (_Handler,), {"ledger": _Ledger()})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ShopServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


_local: ShopServer | None = None
_local_lock = threading.Lock()


def shop_url() -> str:
    """The shop's address: ``$AION_EXAMPLES_SHOP_URL``, else one started in this process."""
    global _local  # noqa: PLW0603 - one shop per process that needs its own
    configured = os.environ.get(SHOP_URL_ENV)
    if configured:
        return configured.rstrip("/")
    with _local_lock:
        if _local is None:
            _local = ShopServer().start()
        return _local.url


def main(argv: list[str] | None = None) -> None:
    """``python -m examples.shop --port N``: serve until killed."""
    parser = argparse.ArgumentParser(prog="examples.shop", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = ShopServer(args.port)
    print(f"shop listening on {server.url}", flush=True)  # noqa: T201 - a service's banner
    server._server.serve_forever()


if __name__ == "__main__":
    main()
