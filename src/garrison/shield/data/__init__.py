"""Versioned policy lists and the policy evaluation set (data files, read with importlib.resources)."""
