"""Accelerator catalog, device discovery and power-limit control (arrives with the energy and governor issues)."""
