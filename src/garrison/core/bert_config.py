"""The shape of a BERT checkpoint's encoder, read from its config.json: what both MiniLM forwards need (the prompt
policy's NumPy one in shield/, the serving workers' torch one in video/), checked once for the variant they run."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class BertConfig:
    heads: int
    layers: int
    eps: float  # LayerNorm epsilon
    pad_token_id: int


def read_bert_config(path: str) -> BertConfig:
    """The encoder shape in `path`/config.json; ValueError for a variant the forwards do not run (activation other
    than exact GELU, or relative position embeddings)."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: not the BERT encoder this code runs (hidden_act, position_embedding_type)")
    return BertConfig(
        heads=int(config["num_attention_heads"]),
        layers=int(config["num_hidden_layers"]),
        eps=float(config["layer_norm_eps"]),
        pad_token_id=int(config.get("pad_token_id", 0)),
    )
