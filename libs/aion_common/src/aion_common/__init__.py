"""aion_common: contracts and helpers shared by every aion service."""
