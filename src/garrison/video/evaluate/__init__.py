"""Faithfulness judge for built-in clips."""
