"""`gali-run`: run experiments from TOML configs (predictions are appended per example; reruns resume).

Exit status: 0 done; 1 some examples ended as error records (rerun to retry them); 2 a configuration, data or
model-loading error; 3 the preflight found the method mis-wired on this model (nothing was predicted);
143 stopped by a signal (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys

from harness.cli._common import guarded, log, parse_shard, setup_logging
from harness.config import expand_config_paths, load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gali-run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", required=True, help="TOML config file(s) or glob(s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted for tables: params.chunk_coe=1000); repeatable")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan; load no weights")
    p.add_argument("--overwrite", action="store_true", help="discard existing predictions of the experiment")
    p.add_argument("--skip-preflight", action="store_true",
                   help="do not check the method's wiring on the loaded model before the first example "
                        "(the preflight; a failure exits with code 3)")
    p.add_argument("--shard", default=None, help="run shard I of N (I/N); default from SLURM array variables")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def dry_run(cfg, shard: tuple[int, int]) -> None:
    from harness.models import load_tokenizer  # noqa: PLC0415
    from harness.runner import plan  # noqa: PLC0415

    print(f"# {cfg.source}\n" + json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
    try:
        tokenizer = load_tokenizer(cfg)
    except Exception as exc:  # noqa: BLE001 - a plan without token counts is still useful
        log.warning("tokenizer unavailable (%s): token lengths omitted", str(exc).splitlines()[0])
        tokenizer = None
    steps = plan(cfg, shard, tokenizer)
    print(f"# plan: task={cfg.task} method={cfg.method} shard={shard[0]}/{shard[1]}")
    for subset, entry in steps.items():
        toks = entry.get("tokens")
        lengths = f" tokens min/median/max={toks['min']}/{toks['median']}/{toks['max']}" if toks else ""
        errors = f" prompt_errors={entry['prompt_errors']}" if entry.get("prompt_errors") else ""
        print(f"  {subset}: {entry['examples']} examples{lengths} max_new_tokens={entry['max_new_tokens']}{errors}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from harness.runner import run_experiment  # noqa: PLC0415

        shard = parse_shard(args.shard)
        configs = [load_config(path, args.overrides) for path in expand_config_paths(args.cfg)]
        status = 0
        for cfg in configs:
            if args.dry_run:
                dry_run(cfg, shard)
                continue
            summary = run_experiment(cfg, overwrite=args.overwrite, shard=shard, preflight=not args.skip_preflight)
            log.info("%s: %d run, %d errors, %d already done, %.1fs%s -> %s", cfg.exp_name, summary.done,
                     summary.errors, summary.skipped, summary.seconds,
                     " (interrupted: rerun to resume)" if summary.interrupted else "", summary.exp_dir)
            if summary.interrupted:
                return 143
            status = 1 if summary.errors else status
        return status

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
