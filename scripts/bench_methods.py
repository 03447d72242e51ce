#!/usr/bin/env python
"""Benchmark every registered method against `original`: prefill seconds and peak memory at several lengths, and
decode tokens/s at each length. Writes `<out>/<tag>.csv` and `<out>/<tag>.md` (machine, versions, model, params).

Each (method, length) runs in its own subprocess, so peak memory is per measurement (CUDA allocator peak on GPU,
VmHWM on CPU; "growth" is the peak minus the memory in use just before the prefill). Methods and their params come
from the registry and `Method.suggested_params(window, max length)`, so newly registered methods appear
automatically; `--methods` picks a subset and `--param gali.noise_type=gaussian` overrides one value;
`--variant gali-noise=gali:noise_type=gaussian` adds a row label running a method with other params (repeatable,
`KEY=VALUE` pairs separated by commas), so GALI with and without noise are measured in the same run.

CPU, GALI noise on/off and every method (docs/bench/cpu-tiny-noise.md, one run on a quiet machine; on a busy one,
run one length per process in parallel with `--out` dirs of their own and combine them with `--merge A.md B.md`):
    V="--variant gali-noise=gali:noise_type=gaussian \\
       --variant gali-noise-factored=gali:noise_type=gaussian,noise_sampler=factored"
    .venv/bin/python scripts/bench_methods.py --shape tiny --lengths 8192,16384 --threads 1 --rounds 1 $V \\
        --tag cpu-tiny-noise
CPU, tiny random Llama (2 layers, hidden 256, window 4096) — the committed table (1 thread: steadier on a
shared machine):
    .venv/bin/python scripts/bench_methods.py --shape tiny --lengths 4096,8192,16384,32768 --threads 1 \\
        --rounds 2 --tag cpu-tiny
SmolLM2-135M-Instruct (pretrained, window 8192; `gali:smollm2` is the demo GGUF, fetched by `gali-demo fetch` and
converted once to fp32 safetensors in a temp dir; any hub id or local dir works too):
    .venv/bin/python scripts/bench_methods.py --model gali:smollm2 --window 2048 --lengths 2048,4096,8192 \\
        --threads 1 --methods original,gali,selfextend,chunkllama,yarn,dynamic_ntk --decode-tokens 8 --rounds 1 \\
        --tag cpu-smollm2
GPU, Llama-3-8B-shaped random model (32 layers, GQA 32/8, head_dim 128, window 8192, θ = 5e5) in bf16:
    python scripts/bench_methods.py --shape llama3-8b --device cuda --dtype bfloat16 \\
        --lengths 8192,16384,32768 --decode-tokens 32 --tag gpu-llama3-8b
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, vocab_size=1000, max_position_embeddings=4096,
                 rope_theta=10000.0),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=8192,
                      rope_theta=500000.0),
}
TARGETS = {"prefill": 1.3, "peak": 1.1, "decode": 0.7}  # GALI (noise off) vs original
NOISE_TARGETS = {"prefill": 1.5, "peak": 1.1, "decode": 0.7}  # GALI with noise (rows whose params turn it on)


# ---------------------------------------------------------------- worker (one measurement, own process)

def _current_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _build_model(spec: dict[str, Any]):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, spec["dtype"])
    if spec.get("model"):
        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype)
        if spec.get("window"):  # like `ori_max_position_embeddings`: methods treat this as the window M
            model.config.max_position_embeddings = spec["window"]
    else:
        shape = dict(SHAPES[spec["shape"]])
        if spec.get("window"):
            shape["max_position_embeddings"] = spec["window"]
        cfg = AutoConfig.for_model("llama", bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, **shape)
        torch.manual_seed(0)
        with torch.device(spec["device"]):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.to(spec["device"]).eval()


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model, apply the method, time one prefill (+ repeats) and `decode_tokens` greedy decode steps."""
    import torch

    from harness.core import params as P
    from harness.core.config import ExperimentConfig
    from harness.core.memory import peak_mb, reset_peak
    from harness.methods.base import METHODS
    from harness.model.engine import Engine, forward_hidden
    from harness.model.loading import model_info

    device, n = spec["device"], spec["length"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = _build_model(spec)
    info = model_info(model.config)
    cls = METHODS.get(spec["method"])
    cfg = ExperimentConfig(task="needle", model=spec.get("model") or spec["shape"], method=cls.name,
                           exp_name="bench", max_pe=spec["max_len"])
    params = P.build(cls.Params, spec["params"], prefix="params.")
    cls.validate(params, cfg, info.original_window)
    method = cls(params, cfg)
    method.apply(model, info)
    method.start_example(0)
    engine = Engine(model, None, method, device)
    ids = torch.randint(3, int(model.config.vocab_size), (n + spec["decode_tokens"] + 1,),
                        generator=torch.Generator().manual_seed(1)).tolist()
    engine.prefill(ids[:256])  # warm-up (lazy initialisation, kernels)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    gc.collect()
    reset_peak(device)
    base = _current_mb(device)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    cache, logits = engine.prefill(ids[:n])
    sync()
    times, cpu_times = [time.perf_counter() - t0], [time.process_time() - c0]
    steps = spec["decode_tokens"]
    step_s, step_cpu = [], []
    with torch.inference_mode():
        for _ in range(steps):
            t1, c1 = time.perf_counter(), time.process_time()
            step = torch.tensor([[int(torch.argmax(logits))]], device=engine.input_device)
            logits = engine.logits(forward_hidden(model, step, cache)[:, -1:])[0, -1]
            sync()
            step_s.append(time.perf_counter() - t1)
            step_cpu.append(time.process_time() - c1)
    peak = peak_mb(device)
    finite = bool(torch.isfinite(logits).all())
    del cache, logits
    for _ in range(spec["repeats"] - 1):
        gc.collect()
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        engine.prefill(ids[:n])
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return {"prefill_s": min(times), "prefill_cpu_s": min(cpu_times), "peak_mb": peak,
            "growth_mb": max(0.0, peak - base),
            "decode_tok_s": 1 / statistics.median(step_s) if step_s else None,
            "decode_cpu_tok_s": 1 / max(statistics.median(step_cpu), 1e-9) if step_cpu else None, "finite": finite,
            "window": info.original_window}


# ---------------------------------------------------------------- driver

def method_params(name: str, window: int, max_len: int, overrides: list[str]) -> dict[str, Any]:
    from harness.core.params import parse_override_value
    from harness.methods.base import METHODS

    params = dict(METHODS.get(name).suggested_params(window, max_len))
    for item in overrides:
        key, _, value = item.partition("=")
        method, _, field = key.partition(".")
        if method == name:
            params[field] = parse_override_value(value)
    return params


def export_alias(alias: str, out: Path) -> str:
    """Save a harness model alias (bundled lab model, fetched SmolLM2 GGUF) as plain fp32 weights under `out`, so
    that every measurement process loads it in about a second instead of dequantising the GGUF again."""
    from harness.core.config import from_dict
    from harness.model.loading import load_model
    from harness.stages.resolve import resolve

    cfg = resolve(from_dict({"task": "needle", "model": alias, "method": "original", "exp_name": "bench",
                             "times": 1, "min_k": 1, "max_k": 1, "gap": 1, "device": "cpu"}), peek=False)
    from transformers import AutoModelForCausalLM

    model, _, _ = load_model(cfg)
    config = model.config
    if hasattr(config, "quantization_config"):  # dequantised GGUF weights: save them as a plain model
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(out)
    return str(out)


def run_one(spec: dict[str, Any], timeout: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail[:200]}


def best_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate repeated measurements: fastest prefill and decode, smallest peak (machine noise only adds)."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    decode = [r["decode_tok_s"] for r in ok if r.get("decode_tok_s")]
    decode_cpu = [r["decode_cpu_tok_s"] for r in ok if r.get("decode_cpu_tok_s")]
    return {"prefill_s": min(r["prefill_s"] for r in ok), "peak_mb": min(r["peak_mb"] for r in ok),
            "prefill_cpu_s": min(r.get("prefill_cpu_s", r["prefill_s"]) for r in ok),
            "growth_mb": min(r["growth_mb"] for r in ok), "decode_tok_s": max(decode) if decode else None,
            "decode_cpu_tok_s": max(decode_cpu) if decode_cpu else None,
            "finite": all(r["finite"] for r in ok), "window": ok[0]["window"], "runs": len(ok)}


def machine() -> dict[str, str]:
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                   if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "platform": platform.platform(), "cpu": cpu,
            "cores": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or x == "":
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def write_outputs(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path, tag: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    orig = {r["length"]: r for r in rows if r["method"] == "original" and "error" not in r}
    for r in rows:
        o = orig.get(r["length"], {})
        r["prefill_x"] = _ratio(r.get("prefill_s"), o.get("prefill_s"))
        r["peak_x"] = _ratio(r.get("peak_mb"), o.get("peak_mb"))
        r["growth_x"] = _ratio(r.get("growth_mb"), o.get("growth_mb"))
        r["decode_x"] = _ratio(r.get("decode_tok_s"), o.get("decode_tok_s"))
        r["prefill_cpu_x"] = _ratio(r.get("prefill_cpu_s"), o.get("prefill_cpu_s"))
        r["decode_cpu_x"] = _ratio(r.get("decode_cpu_tok_s"), o.get("decode_cpu_tok_s"))
    cols = ["method", "length", "prefill_s", "prefill_x", "prefill_cpu_s", "prefill_cpu_x", "peak_mb", "peak_x",
            "growth_mb", "growth_x", "decode_tok_s", "decode_x", "decode_cpu_tok_s", "decode_cpu_x", "finite", "error",
            "params"]
    with (out / f"{tag}.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(r[k]) if k == "params" else r.get(k, "")) for k in cols})
    lines = [f"# Method benchmark: {tag}", "", "Generated by `scripts/bench_methods.py` (do not edit by hand).", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "Each (method, length) is measured in `rounds` fresh processes, interleaved with the other "
              "methods at the same length; the best of them is reported (machine load only slows things down). "
              "Prefill: one `Engine.prefill` in the method's own chunks. Peak: VmHWM (CPU) "
              "or CUDA allocator peak over prefill + decode; growth = peak minus memory in use before the prefill. "
              "Decode: greedy steps after the prefill, 1 / median step time. `x` columns are ratios to `original` at "
              "the same length. `cpu` columns time the same work in process CPU time (`time.process_time`) instead of "
              "wall time: with one torch thread on a shared, oversubscribed machine they are the steadier measure "
              "(waiting for a core is not counted; cache contention still is).", "",
              "| method | L | prefill s | x | cpu s | x | peak MiB | x | growth MiB | x | decode tok/s | x | "
              "cpu tok/s | x | note |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        note = r.get("error", "") or ("" if r.get("finite", True) else "non-finite logits")
        lines.append(f"| {r['method']} | {r['length']} | {_fmt(r.get('prefill_s'))} | {_fmt(r.get('prefill_x'))} | "
                     f"{_fmt(r.get('prefill_cpu_s'))} | {_fmt(r.get('prefill_cpu_x'))} | "
                     f"{_fmt(r.get('peak_mb'), 0)} | {_fmt(r.get('peak_x'))} | {_fmt(r.get('growth_mb'), 0)} | "
                     f"{_fmt(r.get('growth_x'))} | {_fmt(r.get('decode_tok_s'), 1)} | {_fmt(r.get('decode_x'))} | "
                     f"{_fmt(r.get('decode_cpu_tok_s'), 1)} | {_fmt(r.get('decode_cpu_x'))} | {note} |")
    gali = [r for r in rows if r["method"].startswith("gali") and "error" not in r]
    if gali:
        lines += ["", "GALI targets: noise off prefill <= 1.3x, with noise <= 1.5x; peak <= 1.1x, decode >= 0.7x "
                  "original.", ""]
        for r in gali:
            noisy = str(r.get("params", {}).get("noise_type", "gaussian")).lower() in ("gaussian", "uniform")
            t = NOISE_TARGETS if noisy else TARGETS
            checks = [("prefill", r["prefill_x"], r["prefill_x"] is not None and r["prefill_x"] <= t["prefill"]),
                      ("prefill cpu", r["prefill_cpu_x"],
                       r["prefill_cpu_x"] is not None and r["prefill_cpu_x"] <= t["prefill"]),
                      ("peak", r["peak_x"], r["peak_x"] is not None and r["peak_x"] <= t["peak"]),
                      ("decode", r["decode_x"], r["decode_x"] is not None and r["decode_x"] >= t["decode"]),
                      ("decode cpu", r["decode_cpu_x"],
                       r["decode_cpu_x"] is not None and r["decode_cpu_x"] >= t["decode"])]
            lines.append(f"- {r['method']} L={r['length']}: " + ", ".join(
                f"{n} {_fmt(v)}x {'met' if ok else 'NOT met'}" for n, v, ok in checks))
    lines += ["", "Parameters (suggested_params + overrides):", ""]
    seen = {}
    for r in rows:
        seen.setdefault(r["method"], r.get("params", {}))
    lines += [f"- {m}: `{json.dumps(p)}`" for m, p in seen.items()]
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n")


def merge_runs(tables: list[Path], out: Path, tag: str) -> int:
    """Rows of several runs (`<name>.md` + `<name>.csv`) as one table; the header lists each run's own header."""
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for i, md in enumerate(tables, 1):
        for line in md.read_text().splitlines():
            if line.startswith("- ") and ": " in line and not line.startswith("- gali"):
                key, _, value = line[2:].partition(": ")
                if key in ("date", "model", "window M", "dtype", "device", "decode tokens", "repeats", "rounds"):
                    meta[f"run {i} {key}" if key == "date" else key] = value
                elif key not in meta:
                    meta[key] = value
            if line.startswith("Parameters"):
                break
        with md.with_suffix(".csv").open() as fh:
            for r in csv.DictReader(fh):
                row: dict[str, Any] = {"run": i, "method": r["method"], "length": int(r["length"]),
                                       "params": json.loads(r["params"] or "{}")}
                for k, v in r.items():
                    if k in ("method", "length", "params") or k.endswith("_x") or v == "":
                        continue
                    row[k] = v == "True" if k == "finite" else (v if k == "error" else float(v))
                rows.append(row)
    meta["merged"] = "; ".join(f"run {i}: L = {', '.join(sorted({str(r['length']) for r in rows if r['run'] == i}))}"
                               for i in range(1, len(tables) + 1))
    write_outputs(rows, meta, out, tag)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="random model of this shape")
    src.add_argument("--model", help="pretrained model path or hub id (instead of --shape)")
    p.add_argument("--window", type=int, default=None, help="override the window M (max_position_embeddings)")
    p.add_argument("--lengths", default="4096,8192,16384,32768")
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=METHOD:KEY=VALUE[,KEY=VALUE]",
                   help="an extra row LABEL: METHOD with these params on top of its suggested ones")
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="prefills per measurement process (best is kept)")
    p.add_argument("--rounds", type=int, default=2,
                   help="measurement processes per (method, length), interleaved with the other methods")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per measurement (default: torch's)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per (method, length) measurement")
    p.add_argument("--out", default=str(REPO / "docs" / "bench"))
    p.add_argument("--tag", default="bench")
    p.add_argument("--merge", nargs="+", metavar="MD", default=None,
                   help="combine the tables of earlier runs (their .md and .csv, e.g. one run per length) into "
                        "<out>/<tag>.{csv,md}; ratios stay those of each run's own `original` at each length")
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    if args.merge:
        return merge_runs([Path(x) for x in args.merge], Path(args.out), args.tag)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from harness.methods.base import METHODS

    lengths = [int(x) for x in args.lengths.split(",")]
    names = args.methods.split(",") if args.methods else METHODS.names()
    names = ["original"] + [METHODS.canonical(n) for n in names if METHODS.canonical(n) != "original"]
    tmp, alias = None, None
    if args.model and args.model.startswith("gali:"):
        alias, tmp = args.model, tempfile.TemporaryDirectory(prefix="bench-model-")
        args.model = export_alias(args.model, Path(tmp.name))
    if args.model:
        from transformers import AutoConfig

        window = args.window or int(AutoConfig.from_pretrained(args.model).max_position_embeddings)
    else:
        window = args.window or SHAPES[args.shape]["max_position_embeddings"]
    model_desc = alias or args.model or f"random {args.shape} llama {json.dumps(SHAPES[args.shape])}"
    meta = {"model": model_desc, "window M": window, "dtype": args.dtype, "device": args.device,
            "decode tokens": args.decode_tokens, "repeats": args.repeats, "rounds": args.rounds, **machine()}
    if args.threads:
        meta["torch_threads"] = str(args.threads)
    params = {name: method_params(name, window, max(lengths), args.param) for name in names}
    methods = {name: name for name in names}
    for item in args.variant:
        label, _, rest = item.partition("=")
        base, _, pairs = rest.partition(":")
        base = METHODS.canonical(base)
        extra = [f"{base}.{kv}" for kv in pairs.split(",") if kv]
        params[label] = method_params(base, window, max(lengths), args.param + extra)
        methods[label] = base
        names.append(label)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for n in lengths:  # methods interleaved per length and round: comparable machine load
        for r in range(args.rounds):
            for name in names:
                spec = {"method": methods[name], "params": params[name], "length": n, "max_len": max(lengths),
                        "device": args.device, "dtype": args.dtype, "decode_tokens": args.decode_tokens,
                        "repeats": args.repeats, "model": args.model, "shape": args.shape, "window": args.window,
                        "threads": args.threads}
                t0 = time.perf_counter()
                res = run_one(spec, args.timeout)
                runs.setdefault((name, n), []).append(res)
                print(f"[round {r + 1}] {name:>14} L={n:>6}: {json.dumps(res)} ({time.perf_counter() - t0:.0f}s)",
                      flush=True)
            rows = [{"method": m, "length": L, "params": params[m], **best_of(runs[(m, L)])}
                    for m in names for L in lengths if (m, L) in runs]
            write_outputs(rows, meta, Path(args.out), args.tag)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
