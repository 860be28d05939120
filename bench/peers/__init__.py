"""aion beside DBOS and Restate on their own workloads (``make bench-peers``, issue 23).

The peers' scripts (``dbos/``, ``restate/``, ``temporal/``, ``procstats.py``, ``summarize.py``,
``README.md``) are the ones the peer baselines of 2026-12-05/06 were taken with, kept here
unchanged so a clean clone can run them; :mod:`bench.peers.aion_side` runs aion's equivalents
and :mod:`bench.peers.table` compares them.
"""
