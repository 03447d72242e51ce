"""Per-token NLL and greedy tokens of every method on the bundled lab model: a fingerprint of an install.

    python scripts/nll_fingerprint.py write fp-a.npz          # in one environment (e.g. the locked venv)
    python scripts/nll_fingerprint.py write fp-b.npz          # in another (e.g. .venv-latest, another commit)
    python scripts/nll_fingerprint.py compare fp-a.npz fp-b.npz

Two installs that compute the methods identically give max|ΔNLL| = 0 and identical greedy tokens for every method.
1024 tokens of held-out text (4x the lab window), each method with its suggested parameters for that length.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

LENGTH, WINDOW, GEN_FROM, GEN_TOKENS = 1024, 256, 700, 12


def write(path: str) -> None:
    from harness.core.config import from_dict
    from harness.methods.base import METHODS
    from harness.model.engine import Engine
    from harness.model.loading import load_model, load_tokenizer
    from harness.stages.resolve import build_method, resolve
    from harness.tasks._corpus import python_heldout_documents

    text = next(d.text for d in python_heldout_documents() if len(d.text) > 20000)
    out: dict[str, np.ndarray] = {}
    for method in METHODS.names():
        params = METHODS.get(method).suggested_params(WINDOW, LENGTH)
        if method == "gali":
            params.update(noise_type="none")  # the deterministic path
        cfg = from_dict({"task": "pg19", "model": "gali:lab", "method": method, "exp_name": "fingerprint",
                         "max_pe": LENGTH, "params": params}, "fingerprint")
        resolve(cfg, window=WINDOW, peek=False)
        model, info, device = load_model(cfg)
        tokenizer = load_tokenizer(cfg)
        m = build_method(cfg)
        m.apply(model, info)
        engine = Engine(model, tokenizer, m, device)
        ids = tokenizer(text)["input_ids"][:LENGTH]
        m.start_example(1)
        out[method] = engine.token_nll(ids)
        m.start_example(1)
        out[f"{method}:greedy"] = np.array(engine.generate(ids[:GEN_FROM], GEN_TOKENS).token_ids)
    np.savez(path, **out)
    logging.info("wrote %s (%d methods)", path, len(out) // 2)


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    worst = 0.0
    for key in sorted(set(a.files) | set(b.files)):
        if key not in a.files or key not in b.files:
            print(f"{key:28s} only in {'b' if key in b.files else 'a'}")
            continue
        if key.endswith(":greedy"):
            same = a[key].shape == b[key].shape and bool((a[key] == b[key]).all())
            print(f"{key:28s} {'identical' if same else 'DIFFER'}")
            worst = max(worst, 0.0 if same else float("inf"))
        else:
            d = float(np.abs(a[key] - b[key]).max())
            print(f"{key:28s} max|ΔNLL| {d:.3g}")
            worst = max(worst, d)
    return 0 if worst == 0.0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write").add_argument("path")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "write":
        write(args.path)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
