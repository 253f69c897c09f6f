"""Executors that carry out the governor's decisions."""
