"""`gali-longrope-search`: LongRoPE's evolutionary search of per-frequency rescale factors (and n̂) for a model.

The text and the model come from a pg19 config (`--cfg`: model, data source, `max_pe`; any text source the pg19
task reads: the PG19 test split, `data_dir`, `text_files`, or the offline `python_heldout` text). The objective is
the token-weighted perplexity at the target length over `--search-docs` documents; the first `--heldout-docs`
documents are kept out of the search and scored at the end for the searched factors and the hand-set families
(PI, NTK, NTK-by-parts) under the same attention factor, plus the unmodified model. Writes a factors file for
`method = "longrope"` with `[params] factors_file = "<out>"`; `--state` makes the search resumable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from harness.cli._common import guarded, log, setup_logging
from harness.core.config import read_config
from harness.core.errors import HarnessError
from harness.methods.base import Method
from harness.methods.common.frequency import rotary_dim
from harness.methods.longrope import apply_longrope
from harness.methods.longrope.factors import (
    default_attention_factor,
    ntk_by_parts_factors,
    ntk_factors,
    pi_factors,
    write_factors_file,
)
from harness.methods.longrope.search import Genome, Search, SearchSettings
from harness.model.engine import Engine
from harness.model.loading import load_model, load_tokenizer
from harness.stages.resolve import RunPlan, plan_experiment
from harness.tasks.pg19 import PG19
from harness.tasks.scoring.perplexity import aggregate_ppl


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-longrope-search", description=__doc__)
    p.add_argument("--cfg", required=True, help="a pg19 config: model, text source, max_pe (target + 2 tokens)")
    p.add_argument("--out", required=True, help="factors file to write (JSON)")
    p.add_argument("--state", default=None, help="state file: rerun with it to resume or extend the search")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set max_pe=4098")
    p.add_argument("--target-length", type=int, default=None, help="scored tokens per document (default max_pe-2)")
    p.add_argument("--search-docs", type=int, default=2, help="documents the objective is computed on")
    p.add_argument("--heldout-docs", type=int, default=6, help="first documents, kept out of the search, for the table")
    p.add_argument("--evals", type=int, default=None, help="evaluation budget (default: population + 40 * parents)")
    p.add_argument("--population", type=int, default=64)
    p.add_argument("--parents", type=int, default=32)
    p.add_argument("--mutations", type=int, default=16)
    p.add_argument("--crossovers", type=int, default=16)
    p.add_argument("--step", type=float, default=0.01, help="factor grid step (repository: 0.01)")
    p.add_argument("--no-n-hat", action="store_true", help="do not search n̂ (initial tokens keeping the original RoPE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", default=None, help="also write the held-out comparison table (markdown) here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_args(args: argparse.Namespace) -> None:
    for name in ("search_docs", "population", "parents", "mutations", "crossovers"):
        if getattr(args, name) < 1:
            raise HarnessError(f"--{name.replace('_', '-')} must be >= 1")
    if args.parents > args.population:
        raise HarnessError(f"--parents {args.parents} exceeds --population {args.population}. Fix: lower --parents")
    if args.heldout_docs < 0 or (args.evals is not None and args.evals < 1) or args.step <= 0:
        raise HarnessError("--heldout-docs must be >= 0, --evals >= 1 and --step > 0")
    if args.target_length is not None and args.target_length < 2:
        raise HarnessError("--target-length must be >= 2")


def _documents(plan: RunPlan, tokenizer: Any, target: int, search: int, heldout: int) -> tuple[list, list]:
    """Token lists (target + 1 tokens) of the held-out and search documents (only documents long enough)."""
    task = plan.build_task(tokenizer)
    assert isinstance(task, PG19), "checked by run(): the config's task is pg19"
    held, found = [], []
    for example in task.examples(task.subsets()[0]):
        ids = task.tokens(example)
        if len(ids) < target + 1:
            continue
        (held if len(held) < heldout else found).append(ids[: target + 1])
        if len(found) >= search:
            break
    if len(found) < search:
        raise HarnessError(f"{plan.cfg.source}: only {len(held) + len(found)} documents reach {target + 1} tokens; the "
                           f"search needs {heldout} held-out + {search}. Fix: lower --heldout-docs/--search-docs or "
                           f"--target-length, or use a larger text source")
    return held, found


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    _check_args(args)
    cfg = read_config(args.cfg, args.overrides)
    cfg.method, cfg.params = "original", {}  # the search runs the unmodified model (its rope factors are swapped)
    plan = plan_experiment(cfg, "load")
    cfg = plan.cfg
    if cfg.task != "pg19":
        raise HarnessError(f"{args.cfg}: task is '{cfg.task}'. Fix: give a pg19 config (it names the text source)")
    if not args.target_length and not cfg.max_pe:
        raise HarnessError(f"{args.cfg}: no target length. Fix: set max_pe in the config or pass --target-length")
    target = args.target_length or (cfg.max_pe or 0) - 2
    tokenizer = load_tokenizer(cfg, plan.model_config)
    model, info, device = load_model(cfg, plan.model_config, plan.device, plan.dtype)
    window, dim = info.original_window, rotary_dim(model.config)
    scale = target / window
    if scale <= 1:
        raise HarnessError(f"--target-length {target} is within the window {window}. Fix: search beyond the window")
    held, docs = _documents(plan, tokenizer, target, args.search_docs, args.heldout_docs)
    engine = Engine(model, tokenizer, Method(None, cfg), device)
    attention = default_attention_factor(scale, window)

    def ppl(g: Genome | None, texts: list[list[int]]) -> float:
        if g is None:  # the unmodified model
            apply_longrope(model, [1.0] * (dim // 2), None, 1.0, window)
        else:
            apply_longrope(model, list(g.factors), None, attention, window, g.n_hat)
        with torch.inference_mode():
            nlls = [engine.token_nll(ids) for ids in texts]
        return float(aggregate_ppl(nlls, lengths=[target])[target]["ppl_token_weighted"])

    hand = {"PI (uniform s)": pi_factors(dim, scale), "NTK (θ·s^(d/(d−2)))": ntk_factors(dim, scale),
            "NTK-by-parts (YaRN ramp)": ntk_by_parts_factors(dim, scale, info.rope_theta, window)}
    settings = SearchSettings(scale=scale, population=args.population, parents=args.parents,
                              mutations=args.mutations, crossovers=args.crossovers, step=args.step, seed=args.seed,
                              search_n_hat=not args.no_n_hat,
                              evals=args.evals or args.population + 40 * args.parents)
    context = {"model": cfg.model, "target_length": target, "window": window, "docs": len(docs),
               "heldout_docs": len(held), "text": cfg.task_options}
    search = Search(settings, lambda g: ppl(g, docs), list(hand.values()), window, args.state, context)
    t0 = time.perf_counter()
    best, best_ppl = search.run()
    minutes = (time.perf_counter() - t0) / 60
    log.info("longrope search: best search-set ppl %.4f (n_hat %d) after %d evaluations, %.1f min", best_ppl,
             best.n_hat, len(search.order), minutes)
    write_factors_file(args.out, list(best.factors), n_hat=best.n_hat, factor=scale, attention_factor=attention,
                       model=cfg.model, original_window=window, target_length=target, search_ppl=best_ppl,
                       evaluations=len(search.order), settings=settings.__dict__)
    rows = [("original (unmodified)", None)]
    rows += [(name, Genome.make(np.clip(np.maximum.accumulate(f), 1.0, 1.0 + scale))) for name, f in hand.items()]
    rows.append((f"searched (n̂ = {best.n_hat})", best))
    lines = [f"| factors | search-set PPL ({len(docs)} docs) | held-out PPL ({len(held)} docs) |", "|---|---|---|"]
    for name, g in rows:
        lines.append(f"| {name} | {ppl(g, docs):.2f} | {ppl(g, held):.2f} |" if held else
                     f"| {name} | {ppl(g, docs):.2f} | – |")
    table = "\n".join(lines)
    head = (f"PPL at {target} tokens ({scale:g}x the window {window}) of {cfg.model}; attention factor "
            f"{attention:.4f} for every factor set except the unmodified model; {len(search.order)} evaluations.")
    print(head + "\n\n" + table)
    print(f"\nfactors: {args.out}\n{json.dumps([round(x, 2) for x in best.factors])}")
    if args.table:
        Path(args.table).write_text(head + "\n\n" + table + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecation notices, not for users
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
