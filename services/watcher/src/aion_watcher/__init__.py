"""aion watcher service."""
