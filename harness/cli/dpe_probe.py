"""`gali-dpe-probe`: regenerate DPE's per-group scales (and top-k key dimensions) for a model; write a JSON table.

Step (b), with --topk: 2-norm contributions of every frequency pair per (layer, head) on haystack text of lengths
P, P/2, ... (>= --dim-min-length). Step (a): a multi-value needle probe at the target length for every group and
factor (the probed group at the factor, the others at 2·T/P); each group keeps its best factor. The table is reused
with `method = "dpe"` and `[params] scales_file = "<out>"`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import torch

from harness.cli._common import guarded, log
from harness.cli._flags import add_common_flags, configure_logging
from harness.core.config import ExperimentConfig
from harness.core.errors import HarnessError
from harness.methods.dpe import Dpe, DpeParams, DpeTable, equal_groups, probe, save_table
from harness.model.engine import Engine
from harness.model.loading import load_model, load_tokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-dpe-probe", description=__doc__)
    p.add_argument("--model", required=True, help="model id or local directory")
    p.add_argument("--out", required=True, help="where to write the scales table (JSON)")
    p.add_argument("--target", type=int, required=True, help="target context length T (probe prompt length)")
    p.add_argument("--window", type=int, default=None, help="pre-trained window P (default: the model's)")
    p.add_argument("--local-window", type=int, default=None, help="DPE local window w (default P/8, 1024 for 8K)")
    p.add_argument("--groups", type=int, default=8, help="equal groups of frequency pairs (default 8)")
    p.add_argument("--topk", type=int, default=None, help="also select the top-k key pairs per head (published: 48)")
    p.add_argument("--samples", type=int, default=10, help="probe prompts per (group, factor) (official: 100)")
    p.add_argument("--dim-samples", type=int, default=10, help="texts per length for the contributions (official 10)")
    p.add_argument("--min-length", type=int, default=1024, help="smallest effective length probed (factor T/len)")
    p.add_argument("--dim-min-length", type=int, default=2048, help="shortest text for the contributions")
    p.add_argument("--background", type=int, default=None, help="factor of the non-probed groups (default 2·T/P)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--haystack", default=None, help="text file for the haystack (default: Python's pydoc topics)")
    p.add_argument("--skip-probe", action="store_true", help="only compute contributions (needs --topk)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--gguf-file", default=None)
    add_common_flags(p)
    return p


def _haystack_text(path: str | None) -> str:
    if path:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise HarnessError(f"--haystack {path}: cannot read ({exc}). Fix: point it at a text file") from None
    import pydoc_data.topics as topics

    return "\n".join(topics.topics.values())


def _check_args(args: argparse.Namespace) -> None:
    for name in ("target", "samples", "dim_samples", "min_length", "dim_min_length", "max_new_tokens", "groups"):
        if getattr(args, name) < 1:
            raise HarnessError(f"--{name.replace('_', '-')} must be >= 1")
    if args.background is not None and args.background < 1:
        raise HarnessError("--background must be >= 1")
    if args.skip_probe and not args.topk:
        raise HarnessError("--skip-probe computes only the top-k contributions. Fix: add --topk K")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    cfg = ExperimentConfig(task="needle", model=args.model, method="dpe", exp_name="dpe-probe", dtype=args.dtype,
                           device=args.device, gguf_file=args.gguf_file, ori_max_position_embeddings=args.window,
                           max_pe=args.target, source="gali-dpe-probe")
    tokenizer = load_tokenizer(cfg)
    model, info, device = load_model(cfg)
    window = info.original_window
    w = args.local_window or max(1, window // 8)
    n_pairs = info.head_dim // 2
    if not 1 <= args.groups <= n_pairs:
        raise HarnessError(f"--groups {args.groups}: this model has {n_pairs} frequency pairs per head")
    if w >= window:
        raise HarnessError(f"--local-window {w} must be below the model's window {window}")
    bounds = equal_groups(n_pairs, args.groups)
    sentences = probe.haystack_sentences(_haystack_text(args.haystack))
    meta = {"model": args.model, "original_window": window, "target_length": args.target, "head_dim": info.head_dim}
    table = DpeTable(local_window=w, group_bounds=bounds, meta=meta)
    if args.topk:
        if args.topk > n_pairs:
            raise HarnessError(f"--topk {args.topk} exceeds the {n_pairs} pairs per head")
        lengths, length = [], window
        while length >= min(args.dim_min_length, window):
            lengths.append(length)
            length //= 2
        texts = probe.length_samples(tokenizer, sentences, lengths, args.dim_samples)
        log.info("dpe probe: contributions over lengths %s x %d samples", lengths, args.dim_samples)
        contrib = probe.dimension_contributions(model, texts)
        table.topk_dim, table.contributions = args.topk, contrib.tolist()
        table.meta["dimension_lengths"] = lengths
    if not args.skip_probe:
        rng = random.Random(args.seed)
        budget = args.target - args.max_new_tokens
        try:
            samples = [probe.make_probe_sample(tokenizer, sentences, budget, rng) for _ in range(args.samples)]
        except ValueError as exc:
            raise HarnessError(f"{exc}. Fix: raise --target or lower --max-new-tokens") from None
        background, factors = probe.probe_grid(args.target, window, args.min_length)
        background = args.background or background
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        tmp = tempfile.TemporaryDirectory(prefix="dpe-probe-")
        dims_file = None
        if args.topk:  # the probe runs use the key dimensions just computed
            dims_file = str(Path(tmp.name) / "dims.json")
            save_table(table, dims_file)

        def run_probe(scales: list[int]) -> float:
            params = DpeParams(local_window=w, scale_factors=scales, group_bounds=bounds, topk_dim=args.topk,
                               dims_file=dims_file)
            method = Dpe(params, cfg)
            method.apply(model, info)
            engine = Engine(model, tokenizer, method, device)
            with torch.inference_mode():
                outs = [engine.generate(s.input_ids, args.max_new_tokens, eos) for s in samples]
            return sum(probe.score_output(o.text, s.values) for o, s in zip(outs, samples)) / len(samples)

        log.info("dpe probe: %d groups x factors %s (background %d), %d samples of <= %d tokens", args.groups,
                 factors, background, len(samples), budget)
        scales, scores = probe.probe_scales(run_probe, args.groups, background, factors)
        table.scale_factors = scales
        table.meta["probe"] = {"background": background, "factors": factors, "scores": scores,
                               "samples": args.samples, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
        tmp.cleanup()
    save_table(table, args.out)
    log.info("dpe probe: wrote %s (scales %s, w %d, topk %s)", args.out, table.scale_factors, w, table.topk_dim)
    print(args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
