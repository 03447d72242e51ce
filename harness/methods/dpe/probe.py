"""DPE's two calibration steps (docs/reference/beyond.md §1.3–1.4), regenerated because the authors' tables are not
available.

(b) `dimension_contributions`: per (layer, head, pair) the mean over lengths, samples and tokens of
    ‖q_t^(p)‖·‖k_t^(p)‖ on pre-RoPE states (k from the head's KV group); the top-k pairs are a head's key dimensions.
(a) `probe_scales`: for every group g and probe factor f, run a multi-value needle probe with f on group g and the
    background factor 2·T/P on every other group; the group's scale is its best-scoring factor.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.methods.common.frequency import text_config
from harness.methods.common.rope import repeat_kv

log = logging.getLogger(__name__)

ADJECTIVES = ("amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow", "icy", "jolly", "keen", "lucky",
              "misty", "noble", "odd", "proud", "quiet", "rapid", "silent", "tidy", "upbeat", "vivid", "witty", "young")
NOUNS = ("anchor", "bridge", "candle", "desert", "engine", "falcon", "garden", "harbor", "island", "jacket", "kettle",
         "lantern", "meadow", "needle", "orchard", "pebble", "quarry", "river", "saddle", "tunnel", "valley", "wagon")
TEMPLATE = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the numbers afterwards.\n{context}\n"
            "What are all the special magic numbers for {query} mentioned in the provided text? "
            "The special magic numbers for {query} mentioned in the provided text are")
NEEDLE = "One of the special magic numbers for {key} is: {value}."


def probe_grid(target: int, pretrain: int, min_length: int = 1024) -> tuple[int, list[int]]:
    """Background factor 2·T/P and probe factors T/ℓ for ℓ = T, T/2, ... >= min_length (docs/reference/beyond.md
    §1.3, case 10)."""
    background = max(1, (2 * target) // pretrain)
    factors, length = [], target
    while length >= min_length or not factors:
        factors.append(target // length)
        length //= 2
        if length < 1:
            break
    return background, factors


def probe_settings(n_groups: int, background: int, factors: Sequence[int]) -> list[tuple[int, int, list[int]]]:
    """(group, factor, scales) for every probe run: factor on the group, background elsewhere."""
    return [(g, f, [f if h == g else background for h in range(n_groups)]) for g in range(n_groups) for f in factors]


def choose_scales(scores: list[list[float]], factors: Sequence[int], background: int) -> list[int]:
    """Per group the best-scoring factor (ties: the smaller factor); an uninformative group (all scores equal) keeps
    the background factor."""
    out = []
    for g, row in enumerate(scores):
        if max(row) == min(row):
            log.warning("dpe probe: group %d scored %.3f for every factor; keeping the background factor %d",
                        g, row[0], background)
            out.append(background)
        else:
            best = max(row)
            out.append(min(f for f, sc in zip(factors, row) if sc == best))
    return out


def pair_contribution(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Sum over tokens of ‖q_t^(p)‖·‖k_t^(p)‖: q [H, n, d], k [Hkv, n, d] pre-RoPE -> [H, d/2] (fp32)."""
    k = repeat_kv(k[None], q.shape[0] // k.shape[0])[0]
    half = q.shape[-1] // 2

    def norms(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return torch.sqrt(x[..., :half] ** 2 + x[..., half:] ** 2)

    return (norms(q) * norms(k)).sum(dim=1)


@torch.inference_mode()
def dimension_contributions(model: torch.nn.Module, samples: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean 2-norm contribution [layers, heads, pairs] over all tokens of `samples` (lists of token ids).

    Captures pre-RoPE q/k with hooks on q_proj/k_proj (the projections include Qwen2's biases), one sample at a time.
    """
    decoder = model.get_submodule("model")
    cfg = text_config(model)
    layers = [decoder.get_submodule(f"layers.{i}.self_attn") for i in range(cfg.num_hidden_layers)]
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    attn_head_dim = layers[0].head_dim
    assert isinstance(attn_head_dim, int), "attention modules keep their head size in `head_dim`"
    head_dim = int(attn_head_dim)
    total = torch.zeros(len(layers), heads, head_dim // 2)
    captured: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for li, attn in enumerate(layers):
        for name in ("q_proj", "k_proj"):
            def hook(_mod, _inp, out, li=li, name=name):
                captured[(li, name)] = out
            hooks.append(getattr(attn, name).register_forward_hook(hook))
    tokens = 0
    device = decoder.get_submodule("embed_tokens").get_parameter("weight").device
    try:
        for ids in samples:
            decoder(input_ids=torch.tensor([list(ids)], device=device), use_cache=False)
            for li in range(len(layers)):
                q = captured[(li, "q_proj")][0].view(len(ids), heads, head_dim).transpose(0, 1)
                k = captured[(li, "k_proj")][0].view(len(ids), kv, head_dim).transpose(0, 1)
                total[li] += pair_contribution(q, k).cpu()
            tokens += len(ids)
            captured.clear()
    finally:
        for h in hooks:
            h.remove()
    return total / max(1, tokens)


def haystack_sentences(text: str) -> list[str]:
    """Split a haystack text into sentences (". " boundaries), dropping empty pieces."""
    parts = [p.strip() for p in text.replace("\n", " ").split(". ")]
    return [p if p.endswith(".") else p + "." for p in parts if p]


def length_samples(tokenizer, sentences: list[str], lengths: Sequence[int], per_length: int) -> list[list[int]]:
    """Token samples of exactly each length, sample s starting at sentence 100·s (cycling the haystack)."""
    out = []
    for length in lengths:
        for s in range(per_length):
            start = (100 * s) % len(sentences)
            ids: list[int] = []
            i = start
            while len(ids) < length:
                ids.extend(tokenizer(sentences[i % len(sentences)] + " ", add_special_tokens=False)["input_ids"])
                i += 1
            out.append(ids[:length])
    return out


@dataclass
class ProbeSample:
    """One multi-value needle prompt and the values it hides."""

    input_ids: list[int]
    values: list[str]


def make_probe_sample(tokenizer, sentences: list[str], budget: int, rng: random.Random, n_values: int = 4,
                      digits: int = 7) -> ProbeSample:
    """Multi-value needle prompt of at most `budget` tokens: one key, n 7-digit values, one needle per depth slice."""
    key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    values = [str(rng.randint(10 ** (digits - 1), 10 ** digits - 1)) for _ in range(n_values)]
    needles = [NEEDLE.format(key=key, value=v) for v in values]
    overhead = len(tokenizer(TEMPLATE.format(context=" ".join(needles), query=key))["input_ids"])
    if overhead > budget:
        raise ValueError(f"a probe prompt needs {overhead} tokens for the template and needles alone, more than the "
                         f"budget of {budget} (target length minus max_new_tokens)")
    lens = [len(tokenizer(s + " ", add_special_tokens=False)["input_ids"]) for s in sentences]
    i = rng.randrange(len(sentences))
    chosen: list[str] = []
    used = 0
    while used + lens[i % len(sentences)] <= budget - overhead:
        chosen.append(sentences[i % len(sentences)])
        used += lens[i % len(sentences)]
        i += 1
    depths = sorted(rng.uniform(q * 0.99 / n_values, (q + 1) * 0.99 / n_values) for q in range(n_values))
    while True:
        hay = list(chosen)
        for depth, needle in sorted(zip(depths, needles), reverse=True):
            hay.insert(int(depth * len(hay)), needle)
        ids = tokenizer(TEMPLATE.format(context=" ".join(hay), query=key))["input_ids"]
        if len(ids) <= budget or not chosen:  # token merges at sentence joins can add a few tokens: trim and retry
            return ProbeSample(list(ids), values)
        chosen = chosen[: max(0, len(chosen) - 1 - (len(ids) - budget) // 8)]


def score_output(text: str, values: Sequence[str]) -> float:
    """Fraction of the values found (case-insensitive substrings) in the generated text."""
    low = text.lower()
    return sum(v.lower() in low for v in values) / len(values)


def probe_scales(run_probe: Callable[[list[int]], float], n_groups: int, background: int,
                 factors: Sequence[int]) -> tuple[list[int], list[list[float]]]:
    """Run every (group, factor) probe through `run_probe(scales) -> mean score`; return (scales, score table)."""
    scores = [[0.0] * len(factors) for _ in range(n_groups)]
    for g, f, scales in probe_settings(n_groups, background, factors):
        scores[g][list(factors).index(f)] = run_probe(scales)
        log.info("dpe probe: group %d factor %d scales %s -> %.3f", g, f, "-".join(map(str, scales)),
                 scores[g][list(factors).index(f)])
    return choose_scales(scores, factors, background), scores
