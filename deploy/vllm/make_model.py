#!/usr/bin/env python3
"""Writes a vLLM-loadable model directory: the tiny Llama config.json beside
this script plus a word-level tokenizer generated here (no hub download).

The weights are never written: engines run it with ``--load-format dummy``,
whose weights are a deterministic function of the config, so every engine
computes the same KV for the same tokens (what a shared KV cache needs).

Vocabulary: <pad> <s> </s> <unk> then the words w4 .. w{vocab-1}; a prompt of
N words is exactly N tokens, which makes prefix ratios exact.

    python deploy/vllm/make_model.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

HERE = Path(__file__).resolve().parent
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def word(i: int) -> str:
    """The text of token id i (i >= len(SPECIALS))."""
    return f"w{i}"


def make_model(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((HERE / "tiny-llama" / "config.json").read_text())
    shutil.copy(HERE / "tiny-llama" / "config.json", out / "config.json")
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({word(i): i for i in range(len(SPECIALS), config["vocab_size"])})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens(SPECIALS)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "add_bos_token": False, "add_eos_token": False,
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
    return out


def make_weights(out: Path, seed: int = 0, std: float = 0.02) -> Path:
    """Writes ``model.safetensors`` into a make_model directory: seeded random
    weights, the same for every engine. Engines of different TP sizes need
    them: vLLM draws dummy weights per rank's shard (each rank seeds its own
    shard alike), so a TP2 engine's dummy model is not the TP1 engine's."""
    import torch
    from safetensors.torch import save_file

    c = json.loads((out / "config.json").read_text())
    g = torch.Generator().manual_seed(seed)
    h, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std

    t = {"model.embed_tokens.weight": w(vocab, h), "model.norm.weight": torch.ones(h),
         "lm_head.weight": w(vocab, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "self_attn.q_proj.weight": w(q, h), p + "self_attn.k_proj.weight": w(kv, h),
                  p + "self_attn.v_proj.weight": w(kv, h), p + "self_attn.o_proj.weight": w(h, q),
                  p + "mlp.gate_proj.weight": w(inter, h), p + "mlp.up_proj.weight": w(inter, h),
                  p + "mlp.down_proj.weight": w(h, inter),
                  p + "input_layernorm.weight": torch.ones(h),
                  p + "post_attention_layernorm.weight": torch.ones(h)})
    save_file(t, str(out / "model.safetensors"))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(make_model(Path(sys.argv[1])))
