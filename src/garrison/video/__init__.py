"""The generation engine: built-in spacetime-patch DiT, samplers, pipelines, clip world, training, judge."""
