"""Fleet simulator in simulated time (see issue: the planner)."""
