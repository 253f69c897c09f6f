"""The procedural clip world of shared/specs/clips.json and its training stream."""
