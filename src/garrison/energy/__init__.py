"""Energy meters and attribution (see issue: Energy)."""
