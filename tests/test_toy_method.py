"""Adding a method touches one new package and nothing else (issue #20): a toy method defined and registered here,
in tests/, with its own Params and one declared invariant, is listed by `gali-run --list methods`, runs through
`gali-run` (preflight included), and `gali-check` runs its invariant next to the generic ones."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest

from harness.cli import check as check_cli
from harness.cli import run as run_cli
from harness.core.errors import ConfigError
from harness.methods.base import METHODS, Method
from harness.methods.invariants import CheckContext, CheckResult, invariant, passed

TOY = "toy_chunked"


@dataclass
class ToyParams:
    chunk: int = 16  # tokens per forward call of the prefill


@invariant("toy_chunks_cover_the_prompt")
def chunks_cover_the_prompt(ctx: CheckContext) -> CheckResult:
    """The prefill schedule covers the prompt in forwards of at most `chunk` tokens."""
    n, chunk = ctx.long_len, ctx.method.params.chunk
    sizes = ctx.method.prefill_chunks(n)
    return passed("toy_chunks_cover_the_prompt", sum(sizes) == n and max(sizes) <= chunk,
                  f"L={n}: {len(sizes)} forwards of at most {chunk} tokens")


class ToyChunked(Method[ToyParams]):
    """The unmodified model, prefilled `chunk` tokens at a time through the KV cache."""

    name = TOY
    equals_original_within_window = True
    invariants = (chunks_cover_the_prompt,)

    @classmethod
    def validate(cls, params: ToyParams, cfg, window: int | None) -> None:
        if params.chunk < 1:
            raise ConfigError("params.chunk", f"{params.chunk} is below 1", "use chunk >= 1")

    def prefill_chunks(self, n_tokens: int, stride: int | None = None) -> list[int]:
        return super().prefill_chunks(n_tokens, min(stride or self.params.chunk, self.params.chunk))


@pytest.fixture
def toy_method():
    """Register the toy method for one test, and remove it again (no other test sees it)."""
    METHODS.names()  # load the package's methods first, as every registry lookup does
    METHODS.register(ToyChunked)
    try:
        yield ToyChunked
    finally:
        METHODS.unregister(TOY)


def _write(tmp_path, model: str) -> str:
    text = tmp_path / "doc.txt"
    text.write_text(" ".join(f"word{i % 97} and more text number {i}." for i in range(400)))
    path = tmp_path / "toy.toml"
    path.write_text(f'task = "pg19"\nmodel = "{model}"\nmethod = "{TOY}"\nexp_name = "toy"\nmax_pe = 96\n'
                    f'results_dir = "{tmp_path / "results"}"\nmax_examples = 1\n[params]\nchunk = 16\n'
                    f'[task_options]\ntext_files = ["{text}"]\nppl_lengths = [64]\n')
    return str(path)


def test_toy_method_is_listed_run_and_checked(toy_method, tiny_model_dir, tmp_path, capsys):
    assert run_cli.main(["--list", "methods"]) == 0
    listing = capsys.readouterr().out
    assert TOY in listing and "prefilled `chunk` tokens at a time" in listing and "chunk" in listing

    cfg = _write(tmp_path, tiny_model_dir)
    assert run_cli.main(["--cfg", cfg]) == 0, capsys.readouterr().err
    exp = tmp_path / "results" / "toy"
    prov = json.loads((exp / "provenance.json").read_text())
    assert prov["preflight"]["passed"] is True  # equals the original: compared with it in the preflight
    assert [c["name"] for c in prov["preflight"]["checks"]] == [
        "chunked_prefill_equals_one_shot", "equals_original", "cached_decode_equals_recomputation"]
    records = [json.loads(line) for p in (exp / "predictions").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert records and not any("error" in r for r in records)

    capsys.readouterr()
    assert check_cli.main(["--cfg", cfg, "--max-len", "96"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("toy_chunks_cover_the_prompt "))
    assert "PASS" in row and f"{math.ceil(96 / 16)} forwards of at most 16 tokens" in row
    assert "equals_original_within_window " in out and "0 failed" in out


def test_toy_method_is_gone_after_the_test(toy_method):
    METHODS.unregister(TOY)
    with pytest.raises(ConfigError):
        METHODS.get(TOY)
    METHODS.register(ToyChunked)  # the fixture removes it again


def test_no_toy_method_outside_its_fixture():
    assert TOY not in METHODS.names()
