"""Thin typer commands over the layers."""
