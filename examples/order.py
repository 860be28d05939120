"""Order fulfilment: charge the card, ship the parcel and file the invoice — three activities.

The workflow itself does no I/O: each step is an activity that an ``aion worker`` runs
against the example shop (:mod:`examples.shop`, a real HTTP service on loopback) or the disk.
The payment provider is flaky on purpose: its first ``fail_payment_attempts`` requests for an
order answer 503, and the activity's retry policy absorbs them (each attempt is a new request
with the same idempotency key, so the card is charged once). A declined charge (an amount of 0
or less) is not retried. Once paid, the order ships and its invoice is written as a JSON file
to the outbox (``$AION_EXAMPLES_OUTBOX``, default ``.aion/outbox``).

Input: ``{"order_id": str, "amount": int, "fail_payment_attempts": int = 0,
"max_payment_attempts": int = 3, "retry_delay": float = 0.2}``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aion import activity, workflow
from aion.workflow import RetryPolicy
from examples.shop import shop_url

__all__ = ["PaymentDeclined", "charge", "order", "ship", "write_invoice"]

DEFAULT_MAX_PAYMENT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 0.2
OUTBOX_ENV = "AION_EXAMPLES_OUTBOX"
_TIMEOUT_S = 5.0


class PaymentDeclined(Exception):
    """The order could not be paid: declined, or the provider failed every attempt."""


def _post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - the shop's own http URL
        shop_url() + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@activity.defn
def charge(order_id: str, amount: int, fail_first: int = 0) -> dict[str, Any]:
    """Charge ``amount`` for the order (idempotent at the provider by the activity's key)."""
    info = activity.info()
    status, answer = _post(
        "/charges",
        {
            "order_id": order_id,
            "amount": amount,
            "idempotency_key": info.idempotency_key,
            "fail_first": fail_first,
        },
    )
    if status == 402:  # noqa: PLR2004 - Payment Required: declined, retrying cannot help
        raise activity.ApplicationError(
            answer.get("error", "declined"), type="PaymentDeclined", non_retryable=True
        )
    if status != 200:  # noqa: PLR2004
        raise ConnectionError(f"payment provider answered {status}: {answer.get('error')}")
    return {"receipt": answer["receipt"], "amount": answer["amount"], "attempt": info.attempt}


@activity.defn
def ship(order_id: str, receipt: str) -> dict[str, Any]:
    """Book the parcel with the carrier; returns its tracking number."""
    key = activity.info().idempotency_key
    status, answer = _post(
        "/shipments", {"order_id": order_id, "receipt": receipt, "idempotency_key": key}
    )
    if status != 200:  # noqa: PLR2004
        raise ConnectionError(f"carrier answered {status}: {answer.get('error')}")
    return {"tracking": answer["tracking"]}


@activity.defn
def write_invoice(order_id: str, invoice: dict[str, Any]) -> str:
    """Write the invoice to ``<outbox>/<order_id>.json`` (atomically; the same file each
    attempt); returns its path."""
    outbox = Path(os.environ.get(OUTBOX_ENV, ".aion/outbox")).resolve()
    outbox.mkdir(parents=True, exist_ok=True)
    target = outbox / f"{order_id}.json"
    partial = target.with_suffix(f".{activity.info().attempt}.partial")
    partial.write_text(json.dumps(invoice, indent=1, sort_keys=True), encoding="utf-8")
    partial.replace(target)
    return str(target)


@workflow.defn("examples.order")
async def order(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Charge (retrying a flaky provider), ship, write the invoice; returns the receipt,
    tracking number, payment attempts and the invoice's path."""
    order_id = spec["order_id"]
    retry = RetryPolicy(
        initial_interval=spec.get("retry_delay", DEFAULT_RETRY_DELAY),
        maximum_attempts=int(spec.get("max_payment_attempts", DEFAULT_MAX_PAYMENT_ATTEMPTS)),
    )
    try:
        paid = await ctx.execute_activity(
            charge,
            order_id,
            spec["amount"],
            spec.get("fail_payment_attempts", 0),
            start_to_close=_TIMEOUT_S * 2,
            retry=retry,
        )
    except workflow.ActivityError as failed:
        raise PaymentDeclined(
            f"order {order_id}: payment failed after {failed.attempt} attempt(s): "
            f"{failed.cause_message}"
        ) from None
    shipment = await ctx.execute_activity(
        ship, order_id, paid["receipt"], start_to_close=_TIMEOUT_S * 2, retry=retry
    )
    invoice = {
        "order_id": order_id,
        "amount": paid["amount"],
        "receipt": paid["receipt"],
        "tracking": shipment["tracking"],
        "issued_at": ctx.now().isoformat(),
    }
    path = await ctx.execute_activity(write_invoice, order_id, invoice, start_to_close=10)
    return {
        "order_id": order_id,
        "status": "shipped",
        "receipt": paid["receipt"],
        "tracking": shipment["tracking"],
        "payment_attempts": paid["attempt"],
        "invoice": path,
    }
