import torch

from garrison.video.models.text_encoder import TextEncoder


def test_states_are_padded_with_a_mask_and_cached_prompts_match_fresh_ones():
    enc = TextEncoder(cache_size=3)
    prompts = ["a red circle", "a blue square moving up on a gray background", ""]
    states, mask = enc.encode(prompts)
    assert states.shape[:2] == mask.shape and states.shape[2] == 384
    assert mask.sum(1).tolist() == [enc.token_count(p) for p in prompts]
    assert torch.all(states[~mask] == 0)
    # overflowing the cache must re-encode, never lose a prompt of the current call
    again, _ = enc.encode(["a green ball", "a red circle", "a white box"])
    assert torch.allclose(again[1, : mask[0].sum()], states[0, : mask[0].sum()], atol=1e-5)


def test_states_are_those_of_transformers_bert():
    """The written-out MiniLM forward and tokenizer give transformers' BertModel `last_hidden_state` (padding,
    truncation and all), so swapping transformers out changes no clip."""
    from transformers import AutoModel, AutoTokenizer

    from garrison.video.models.text_encoder import MAX_TEXT_TOKENS, model_dir

    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    model = AutoModel.from_pretrained(model_dir()).eval()
    enc = TextEncoder()
    prompts = ["a red circle", "a blue square moving up on a gray background", "", "Ünïcödé 特朗普 🎈", "a dot " * 80]
    for batch_prompts in (prompts, prompts[1:2]):  # padded batch, and one prompt alone
        batch = tokenizer(batch_prompts, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt")
        with torch.no_grad():
            expected = model(**batch).last_hidden_state
        enc._cache.clear()
        states, mask = enc.encode(batch_prompts)
        assert torch.equal(mask, batch["attention_mask"].bool())
        assert [enc.token_count(p) for p in batch_prompts] == batch["attention_mask"].sum(1).tolist()
        torch.testing.assert_close(states, expected * mask[..., None], atol=1e-6, rtol=0)


def test_encoder_loads_no_transformers_and_maps_the_weights_file():
    """A serving worker holds this encoder: it must not import transformers' modeling code (~110 MB), and on the CPU
    its weights stay a map of the package's file (page cache, shared with the server's policy), not a copy."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from garrison.video.models.text_encoder import shared_text_encoder\n"
        "enc = shared_text_encoder('cpu')\n"
        "enc.encode(['a red circle moving right'])\n"
        "w = enc.model.weights['encoder.layer.0.attention.self.query.weight']\n"
        "mapped = [l for l in open('/proc/self/maps') if l.rstrip().endswith('model.safetensors')]\n"
        "starts_ends = [tuple(int(x, 16) for x in l.split()[0].split('-')) for l in mapped]\n"
        "print(any(a <= w.data_ptr() < b for a, b in starts_ends), 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]
