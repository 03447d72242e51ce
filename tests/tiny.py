"""Tiny random models and a tokenizer trained offline, for tests (no hub access)."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch

#: Every family a tiny model can be built for (harness.model.loading.FAMILIES); the first three: position families.
#: "gemma3" is the multimodal Gemma 3 (4B–27B layout): the gemma3_text decoder plus a tiny SigLIP vision tower.
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "phi3")
#: a tiny SigLIP vision tower for the multimodal Gemma 3 (16×16 images in 4×4 patches, pooled to 2×2 = 4 tokens)
TINY_VISION = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
               "image_size": 16, "patch_size": 4}


@functools.lru_cache(maxsize=1)
def corpus() -> str:
    """Offline English-ish text: Python's own docs topics plus the filler of the needle task."""
    import pydoc_data.topics as topics

    text = "\n".join(list(topics.topics.values())[:80])
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    needle = "The pass key is 12345. Remember it. 12345 is the pass key.\n"
    return text + filler * 50 + needle + inspect.getsource(torch.nn.Module)[:20000]


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer with <s>/</s> specials, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus()], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def model_config(family: str = "llama", window: int = 64, vocab_size: int = 512, layers: int = 2,
                 heads: int = 4, kv_heads: int = 2, head_dim: int = 16, theta: float = 10000.0):
    """A tiny config of `family` with pre-trained window `window` and GQA."""
    from transformers import AutoConfig

    if family == "gemma3":  # multimodal: the text decoder's config nested in the composite one
        text = model_config("gemma3_text", window, vocab_size, layers, heads, kv_heads, head_dim, theta).to_dict()
        for key in ("model_type", "transformers_version", "architectures"):
            text.pop(key, None)
        return AutoConfig.for_model("gemma3", text_config=text, vision_config=dict(TINY_VISION), mm_tokens_per_image=4,
                                    tie_word_embeddings=False)
    hidden = heads * head_dim
    extra = family_extras(family, layers, head_dim, theta)
    return AutoConfig.for_model(
        family, vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=window,
        bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False, **extra,
    )


def family_extras(family: str, layers: int, head_dim: int, theta: float) -> dict:
    """Config keys that make a tiny model exercise its family's features (per-layer rope, sliding layers)."""
    extra: dict = {"head_dim": head_dim, "rope_theta": theta}
    if family in ("gemma2", "gemma3_text"):
        # alternate sliding (window 8, so short tests cross it) and global layers, as the real models do
        extra.update(query_pre_attn_scalar=head_dim, sliding_window=8,
                     layer_types=[("sliding_attention", "full_attention")[i % 2] for i in range(layers)])
    if family == "gemma3_text":  # per-layer-type rope: local base 1e4, global base `theta` * 100 (like 1e4 / 1e6)
        del extra["rope_theta"]
        extra["rope_parameters"] = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                    "full_attention": {"rope_type": "default", "rope_theta": theta * 100}}
    if family == "phi3":  # partial rotary (Phi-4-mini style; Phi-3/3.5 use 1.0): only half of each head rotates
        extra["partial_rotary_factor"] = 0.5
    return extra


def make_model_dir(path: Path, family: str = "llama", window: int = 64, seed: int = 0, **kw) -> Path:
    """Save a random tiny model + tokenizer of `family` into `path` (loadable with from_pretrained)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = model_config(family, window=window, **kw)
    model = AutoModelForCausalLM.from_config(cfg)
    # larger-than-default init so that attention patterns (and hence positions) matter in tests
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(8.0)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    build_tokenizer(cfg.get_text_config().vocab_size).save_pretrained(path)
    return path
