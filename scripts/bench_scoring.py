#!/usr/bin/env python
"""Time LongBench scoring (target: 10,000 predictions in < 10 s) and gali-collect (target: 100 experiments in < 5 s).

Scoring: synthetic predictions spread over the 16 English datasets; texts are drawn from a Zipf-distributed
vocabulary with sentence lengths and answer/summary lengths roughly like the real datasets (gov_report references
~550 words vs ~380-word predictions, ...). Collecting: synthetic result directories (config.json, provenance.json,
scores.json as gali-eval writes them) in a temporary directory: LongBench (16 datasets), needle (16 depths x 16
lengths) and PG19 (64 lengths) experiments over 4 models and 5 methods; timed with tables only, with
figures, and again with figures when the data did not change (figures are then kept, not redrawn).
Prints wall seconds and CPU seconds (this process, and the figure worker processes); asserts nothing. On a shared
machine take the best of a few runs: wall time grows with the other load, CPU time much less.

    .venv/bin/python scripts/bench_scoring.py [--n 10000] [--experiments 100] [--seed 0] [--skip-scoring]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.tasks.scoring.longbench_metrics import score_dataset

ENGLISH = ["narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum",
           "multi_news", "trec", "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p"]
QA = {"narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "triviaqa"}
SUMMARY_WORDS = {"gov_report": (380, 550), "multi_news": (300, 260), "qmsum": (200, 70), "samsum": (25, 20)}
TREC_CLASSES = [f"{a} {b}" for a in ("Abbreviation", "Entity", "Description", "Human", "Location", "Numeric")
                for b in ("kind", "other", "definition", "reason", "manner", "date", "city", "count")][:50]


class TextMaker:
    """Zipf-ish word sampler (cumulative weights, bisect) producing sentences of ~22 words."""

    def __init__(self, rng: random.Random, vocab_size: int = 8000) -> None:
        self.rng = rng
        self.words = ["the", "of", "and", "to", "a", "in", "is", "that"] + [f"w{i}" for i in range(vocab_size)]
        self.cum_weights = list(itertools.accumulate(1.0 / (rank + 1) ** 1.07 for rank in range(len(self.words))))

    def words_(self, n: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cum_weights, k=n)

    def text(self, n: int, sentence: int = 22) -> str:
        words = self.words_(n)
        for i in range(sentence - 1, n, sentence):
            words[i] += "."
        return " ".join(words)


def make_example(dataset: str, mk: TextMaker, rng: random.Random) -> tuple[str, list[str]]:
    """One synthetic (prediction, answers) pair for ``dataset``."""
    if dataset in QA:
        answers = [mk.text(rng.randint(1, 8)) for _ in range(rng.randint(1, 3))]
        pred = rng.choice(answers) + " " + mk.text(rng.randint(0, 30)) if rng.random() < 0.5 else mk.text(20)
        return pred, answers
    if dataset in SUMMARY_WORDS:
        n_pred, n_ref = SUMMARY_WORDS[dataset]
        pred = mk.text(int(n_pred * rng.uniform(0.6, 1.4)))
        if dataset == "samsum":
            pred += "\nDialogue: " + mk.text(30)
        return pred, [mk.text(int(n_ref * rng.uniform(0.6, 1.4)))]
    if dataset == "trec":
        truth = rng.choice(TREC_CLASSES)
        return rng.choice([truth, rng.choice(TREC_CLASSES)]) + "\nQuestion: ...", [truth]
    if dataset == "passage_count":
        return f"There are {rng.randint(1, 30)} unique paragraphs.", [str(rng.randint(1, 30))]
    if dataset == "passage_retrieval_en":
        return f"Paragraph {rng.randint(1, 30)}", [f"Paragraph {rng.randint(1, 30)}"]
    code = [f"    {' '.join(mk.words_(rng.randint(3, 9)))}({rng.randint(0, 9)})" for _ in range(6)]
    pred = "```python\n# continue the code\n" + "\n".join(code) + "\n```"
    return pred, [code[0] if rng.random() < 0.5 else f"    return {' '.join(mk.words_(4))}"]


def bench_scoring(n: int, seed: int) -> None:
    """Score `n` synthetic LongBench predictions; print per-dataset and total seconds."""
    rng = random.Random(seed)
    mk = TextMaker(rng)
    per_dataset = {name: [] for name in ENGLISH}
    for i in range(n):
        name = ENGLISH[i % len(ENGLISH)]
        per_dataset[name].append(make_example(name, mk, rng))

    score_dataset("qasper", ["warm up"], [["warm up"]])  # imports done before timing
    total = 0.0
    for name, examples in per_dataset.items():
        preds = [p for p, _ in examples]
        answers = [a for _, a in examples]
        start = time.perf_counter()
        score = score_dataset(name, preds, answers, TREC_CLASSES if name == "trec" else None)
        took = time.perf_counter() - start
        total += took
        print(f"{name:22s} n={len(examples):5d}  score={score:7.2f}  {took:7.3f} s")
    print(f"TOTAL {n} predictions: {total:.3f} s (target < 10 s)")


def synthetic_scores(task: str, rng: random.Random, window: int) -> dict:
    """The per-subset part of a scores.json document of `task`, with plausible random numbers."""
    def subset_entry(score: float, n: int, **extra: object) -> dict:
        return {"score": round(score, 2), **extra, "n_scored": n, "n_errors": 0, "n_expected": n, "complete": True,
                "beyond_original": {"score": round(score * 0.8, 2), "threshold": window, "n_scored": n // 2,
                                    "n_of": n}}

    if task == "longbench":
        return {name: subset_entry(rng.uniform(5, 60), 200, truncated=0) for name in ENGLISH}
    if task == "needle":
        lengths = [window * k // 4 for k in range(1, 17)]
        cells = {f"{length}|{100 * d / 16:g}": round(100 * rng.random() * min(1, window / length), 2)
                 for length in lengths for d in range(1, 17)}
        by_length = {str(length): round(sum(v for k, v in cells.items() if k.startswith(f"{length}|")) / 16, 2)
                     for length in lengths}
        return {"needle": subset_entry(sum(cells.values()) / len(cells), 16 * 16 * 4, cells=cells,
                                       by_length=by_length)}
    ppl = {str(1024 * i): {"ppl_mean_of_docs": 8 * max(1.0, 1024 * i / window) ** 2,
                           "ppl_token_weighted": 7.5 * max(1.0, 1024 * i / window) ** 2, "n_docs": 100,
                           "n_excluded": 0} for i in range(1, 65)}
    return {"pg19": subset_entry(ppl["65536"]["ppl_token_weighted"], 100, ppl=ppl, score_length=65536)}


def make_results(root: Path, n: int, seed: int) -> None:
    """`n` synthetic evaluated experiment directories under `root`."""
    rng = random.Random(seed)
    models = ["meta-llama/Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B", "Qwen/Qwen2-7B", "mistralai/Mistral-7B"]
    methods = ["original", "ntk", "yarn", "gali", "dpe"]
    tasks = ["longbench", "needle", "pg19"]
    for i in range(n):
        task, model, method = tasks[i % 3], models[i // 3 % 4], methods[i // 12 % 5]
        window = 4096 if "Llama-2" in model else 8192
        name = f"{task}-{model.split('/')[-1]}-{method}-{i:03d}"
        subsets = synthetic_scores(task, rng, window)
        scores = [m["score"] for m in subsets.values()]
        doc = {"exp_name": name, "task": task, "method": method, "model": model, "max_pe": 4 * window,
               "params": {"factor": 4.0} if method != "original" else {}, "subsets": subsets,
               "summary": {"average": round(sum(scores) / len(scores), 2)}, "complete": True,
               "windows": {"original_window": window, "original_window_source": "provenance.json",
                           "target_window": 4 * window},
               "length_subsets": {"beyond_original": {"threshold": window, "n_scored": 100,
                                                      "summary": {"average": 1.0}}}}
        d = root / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"task": task, "model": model, "method": method, "exp_name": name}))
        (d / "provenance.json").write_text(json.dumps({"original_window": window}))
        (d / "scores.json").write_text(json.dumps(doc))


def bench_collect(n: int, seed: int) -> None:
    """Collect `n` synthetic experiments (tables only, then with figures); print seconds."""
    from harness.core.results import find_experiments
    from harness.stages.collect import collect

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        make_results(root, n, seed)
        collect(find_experiments(root)[:3], Path(tmp) / "warm" / "s.xlsx", plots=True)  # imports before timing
        for plots, what in ((False, "tables only"), (True, "tables + figures, first drawing"),
                            (True, "again, unchanged data: figures kept")):
            start, cpu, workers = time.perf_counter(), time.process_time(), _children_cpu()
            result = collect(find_experiments(root), root / "summary" / "summary.xlsx", plots=plots)
            took, cpu, workers = time.perf_counter() - start, time.process_time() - cpu, _children_cpu() - workers
            rows = sum(len(df) for df in result["tables"].values())
            what = what.replace("figures", f"{len(result['figures'])} figures", 1)
            print(f"COLLECT {n} experiments ({rows} rows, {what}): {took:.3f} s wall, {cpu:.3f} s CPU "
                  f"+ {workers:.3f} s CPU in drawing processes (target < 5 s wall)")


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (the figure workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="total number of predictions (default 10000)")
    parser.add_argument("--experiments", type=int, default=100, help="experiments to collect (default 100; 0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-scoring", action="store_true", help="only time the collection")
    args = parser.parse_args()
    if not args.skip_scoring:
        bench_scoring(args.n, args.seed)
    if args.experiments > 0:
        bench_collect(args.experiments, args.seed)


if __name__ == "__main__":
    main()
