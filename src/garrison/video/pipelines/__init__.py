"""Pipelines: text -> Clip, and their analytic cost."""
