#!/usr/bin/env python
"""Time LongBench scoring of synthetic predictions spread over the 16 English datasets (target: 10,000 in < 10 s).

Texts are drawn from a Zipf-distributed vocabulary with sentence lengths and answer/summary lengths roughly like the
real datasets (gov_report references ~550 words vs ~380-word predictions, ...). Prints seconds; asserts nothing.

    .venv/bin/python scripts/bench_scoring.py [--n 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.scoring.longbench_metrics import score_dataset  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="total number of predictions (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    mk = TextMaker(rng)
    per_dataset = {name: [] for name in ENGLISH}
    for i in range(args.n):
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
    print(f"TOTAL {args.n} predictions: {total:.3f} s (target < 10 s)")


if __name__ == "__main__":
    main()
