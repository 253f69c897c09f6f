"""The legal shield: policy, watermark, C2PA, registry, audit (see issue: the legal shield)."""
