"""The arbiter between training and serving (see issue: the governor)."""
