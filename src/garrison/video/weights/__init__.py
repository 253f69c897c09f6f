"""Shipped weights of the built-in model."""
