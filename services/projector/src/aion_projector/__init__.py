"""aion projector service."""
