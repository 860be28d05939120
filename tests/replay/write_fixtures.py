"""Write the replay fixtures of the newest schema release: missing files only, never overwrite.

Run after adding ``schemas/v<N>/`` and ``EXPECTED["v<N>"]`` in ``test_replay_fixtures.py``::

    .venv/bin/python tests/replay/write_fixtures.py

It encodes each expected object with today's codec (which writes the newest release) into
``tests/replay/fixtures/v<N>/<name>.hex``. It refuses to write for any older release: those
files were written by that release's code and are the evidence that it stays readable.
"""

from __future__ import annotations

import sys

# run as a script, this file's directory is on sys.path
from test_replay_fixtures import EXPECTED, FIXTURES  # type: ignore[import-not-found]  # script dir

from aion_common.codecs import Codec

_WRAP = 64


def main() -> int:
    """Write the newest release's missing fixtures; returns the exit status."""
    codec = Codec()
    newest = max((info.version for info in codec.registry.released()), key=lambda v: int(v[1:]))
    if newest not in EXPECTED:
        print(f"add EXPECTED[{newest!r}] to test_replay_fixtures.py first", file=sys.stderr)
        return 1
    directory = FIXTURES / newest
    directory.mkdir(parents=True, exist_ok=True)
    for name, (method, value) in EXPECTED[newest].items():
        path = directory / f"{name}.hex"
        if path.exists():
            print(f"kept    {path}")
            continue
        data: bytes = getattr(codec, f"encode_{method}")(value)
        hexed = data.hex()
        path.write_text(
            "\n".join(hexed[i : i + _WRAP] for i in range(0, len(hexed), _WRAP)) + "\n",
            encoding="ascii",
        )
        print(f"wrote   {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
