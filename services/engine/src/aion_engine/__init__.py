"""aion engine service."""
