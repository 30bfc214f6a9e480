"""Adapters for specific callers of spacer_worker (CoralNet's job queue)."""
