"""aion's benchmarks: ``python -m bench`` runs every one; each prints JSON lines."""
