"""aion's example workflows (``aion-engine --workflows examples`` loads them all).

- :mod:`examples.order` — order fulfilment: charge, ship and invoice as activities, against
  :mod:`examples.shop` (a loopback HTTP service with a flaky payment provider) and the disk.
- :mod:`examples.fanout` — fan-out/fan-in: 50 children with mixed outcomes, aggregated.
- :mod:`examples.poller` — a poller that continues-as-new between durable sleeps.
- :mod:`examples.approval` — waits for a signal, with a timeout that decides the outcome.
- :mod:`examples.cancellation` — a parent whose cancellation propagates to its children.
- :mod:`examples.integration` — an ``orders`` topic whose records ``aion ingress`` turns into
  one workflow each (``examples/integration/ingress.yaml``).
- :mod:`examples.demo` — the cases ``aion dev --demo`` runs against every example.
"""

from examples import approval, cancellation, demo, fanout, integration, order, poller, shop

__all__ = ["approval", "cancellation", "demo", "fanout", "integration", "order", "poller", "shop"]
