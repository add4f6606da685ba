"""Integrations of the kvtier store with serving engines."""
