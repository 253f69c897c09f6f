"""Durable state: requests, jobs, decisions (see issues: governor, service)."""
