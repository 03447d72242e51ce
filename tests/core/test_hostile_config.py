"""Hostile configs (numbers, files, names, devices, shard requests, credentials): one clear error, before any model
loads, nothing written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from harness.cli import run as cli_run
from harness.cli._common import parse_shard
from harness.core.config import from_dict, read_toml
from harness.core.errors import ConfigError, DataError, HarnessError
from harness.core.params import INT64_MAX, MAX_TOKENS
from harness.model import loading as models
from harness.stages.resolve import load_plan, plan_config, resolve
from harness.stages.run import work_summary

LAB = "gali:lab"


def cfg_dict(tmp_path: Path, **extra) -> dict:
    base = {"task": "needle", "model": LAB, "method": "original", "exp_name": "x", "times": 1,
            "results_dir": str(tmp_path / "results"),
            "task_options": {"lengths": [64], "depths": 2, "fit": "reference"}}
    if extra.get("task", "needle") != "needle":
        base["task_options"] = {}
    for key, value in extra.items():
        if key in ("params", "task_options"):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return base


def refused(data: dict, key: str) -> str:
    with pytest.raises(ConfigError) as err:
        resolve(from_dict(data, source="hostile.toml"))
    message = str(err.value)
    assert f"'{key}'" in message and "hostile.toml" in message and "Fix:" in message
    return message


# ------------------------------------------------------------------------------------------------ 1. numbers
NAN, INF = math.nan, math.inf
BAD_NUMBERS = [
    *[({"method": m, "factor": v}, "factor") for m in ("yarn", "linear", "ntk", "dynamic_ntk")
      for v in (NAN, INF, -INF, 0.5, 0.0, -2.0)],
    *[({"method": "yarn", "params": {"factor": v}}, "params.factor") for v in (NAN, 0.25)],
    *[({"method": "yarn", "max_pe": 512, "params": {k: v}}, f"params.{k}")
      for k in ("beta_fast", "beta_slow", "attention_factor") for v in (NAN, INF, -1.0)],
    *[({"task_options": {"chars_per_token": v}}, "task_options.chars_per_token") for v in (NAN, INF, -3.75, 0.0)],
    *[({"task_options": {"lengths": None}, "min_k": v, "max_k": 2, "gap": 1}, "min_k") for v in (0, -1)],
    *[({"max_pe": v}, "max_pe") for v in (2**63, 2**70, -(2**64), MAX_TOKENS + 1, 0)],
    *[({"times": v}, "times") for v in (0, -4, 10**9)],
    ({"stride": 0}, "stride"), ({"seed": -1}, "seed"), ({"max_examples": 0}, "max_examples"),
    ({"task": "passkey", "n_garbage": 10**12, "task_options": {}}, "n_garbage"),
    ({"ori_max_position_embeddings": -256}, "ori_max_position_embeddings"),
    *[({"method": "gali", "params": {"chunk_coe": v}}, "params.chunk_coe") for v in (NAN, INF, -1, 0.0, 2**40)],
    ({"method": "gali", "params": {"std_base": NAN}}, "params.std_base"),
    *[({"method": "selfextend", "params": {"scale_base": v}}, "params.scale_base") for v in (NAN, 0.5, 1.0, -2.0)],
    ({"method": "selfextend", "params": {"group_size": 0, "window_size": 8}}, "params.group_size"),
    ({"method": "leaky_rerope", "params": {"k": 0.0}}, "params.k"),
    ({"method": "rerope", "params": {"window": 2**40}}, "params.window"),
    ({"method": "string", "params": {"offset_ratio": NAN}}, "params.offset_ratio"),
    ({"method": "dpe", "params": {"groups": 0}}, "params.groups"),
    ({"method": "dpe", "params": {"scale_factors": [1, -2]}}, "params.scale_factors[1]"),
    ({"method": "chunkllama", "params": {"chunk_size": -5}}, "params.chunk_size"),
    ({"task_options": {"depth_list": [0.5, NAN]}}, "task_options.depth_list[1]"),
    ({"task_options": {"lengths": [64, 2**30]}}, "task_options.lengths[1]"),
    ({"task_options": {"depths": 0}}, "task_options.depths"),
    ({"task_options": {"extra_new_tokens": -1}}, "task_options.extra_new_tokens"),
    ({"task": "pg19", "max_pe": 8, "task_options": {"ppl_step": 0}}, "task_options.ppl_step"),
]


@pytest.mark.parametrize("extra,key", BAD_NUMBERS, ids=[f"{k}={list(e.values())[-1]}" for e, k in BAD_NUMBERS])
def test_number_outside_its_domain_is_refused(tmp_path, extra, key):
    message = refused(cfg_dict(tmp_path, **extra), key)
    assert "Traceback" not in message and "\n" not in message


@pytest.mark.parametrize("extra", [{"method": "yarn", "factor": 2.0}, {"method": "gali", "max_pe": 512},
                                   {"method": "selfextend", "max_pe": 512, "params": {"scale_base": -1.0}}, {"seed": 0},
                                   {"max_pe": MAX_TOKENS}, {"task_options": {"chars_per_token": 4.5}}])
def test_numbers_inside_their_domain_pass(tmp_path, extra):
    resolve(from_dict(cfg_dict(tmp_path, **extra), source="ok.toml"))


@pytest.mark.parametrize("extra", [
    {"times": 100_000, "task_options": {"lengths": [64] * 20, "depths": 16}},  # 32M examples
    {"task_options": {"lengths": None, "depths": 16}, "min_k": 1, "max_k": 30_000, "gap": 1, "times": 10},
    {"task": "passkey", "task_options": {}, "n_garbage": 4 * MAX_TOKENS, "times": 100_000},
])
def test_plan_beyond_memory_is_refused_before_building_it(tmp_path, extra):
    cfg = resolve(from_dict(cfg_dict(tmp_path, **extra), source="big.toml"))
    with pytest.raises(ConfigError, match="times.*(examples|memory)"):
        work_summary(plan_config(cfg))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("key,value", [("factor", "nan"), ("times", "inf"), ("max_pe", "1e400"), ("min_k", "-0"),
                                       ("times", "99999999999999999999"), ("gap", "-1")])
def test_dry_run_catches_numbers_with_one_line(tmp_path, capsys, key, value):
    keys = {"task": '"needle"', "model": f'"{LAB}"', "method": '"yarn"', "max_pe": "512", "min_k": "1",
            "max_k": "1", "gap": "1", "times": "1", "results_dir": f'"{tmp_path / "r"}"', key: value}
    path = tmp_path / "c.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
    assert cli_run.main(["--cfg", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and f"'{key}'" in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- 2. files
@pytest.mark.parametrize("content,fragment", [
    (b'task = "needle"\nexp_name = "caf\xe9"\n', ":2: not UTF-8"),
    (b"\xff\xfetask = 1\n", ":1: not UTF-8"),
    (b"a = " + b"[" * 1000 + b"]" * 1000 + b"\n", "nested"),
    (b"x." * 1000 + b"y = 1\n", "nested"),
    (b"[" + b"a." * 200 + b"b]\nc = 1\n", "nested"),
])
def test_broken_config_files_are_one_line_errors(tmp_path, content, fragment):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(HarnessError) as err:
        read_toml(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


LB_ROW = {"context": "some text", "input": "a question", "answers": ["a"], "length": 3, "_id": "x1"}
LEVAL_ROW = {"input": "a document", "instructions": ["q1"], "outputs": ["a1"], "evaluation": "exam"}


@pytest.mark.parametrize("content,fragment", [
    (b'{"context": "caf\xe9", "input": "x", "answers": ["a"]}\n', "trec.jsonl:1: not valid UTF-8"),
    (json.dumps(LB_ROW).encode() + b"\n\xff\n", "trec.jsonl:2: not valid UTF-8"),
    (json.dumps({**LB_ROW, "answers": 3}).encode(), "field 'answers' is a int"),
    (json.dumps({**LB_ROW, "context": [1, 2]}).encode(), "field 'context' is a list"),
    (json.dumps({**LB_ROW, "input": None}).encode(), "field 'input' is a NoneType"),
    (b"[1, 2]\n", "trec.jsonl:1: expected a JSON object"),
    (b'{"context": "abc', "trec.jsonl:1: not valid JSON"),
    (json.dumps({"context": "c", "input": "i"}).encode(), "lacks field(s) ['answers']"),
    (b"", "no rows (an empty file)"),
    (b"\n\n", "no rows (an empty file)"),
])
def test_broken_longbench_data_names_the_file_and_line(tmp_path, content, fragment):
    from harness.tasks import datasets as data
    (tmp_path / "trec.jsonl").write_bytes(content)
    with pytest.raises(DataError) as err:
        data.load_longbench("trec", str(tmp_path))
    assert str(tmp_path / "trec.jsonl") in str(err.value) and fragment in str(err.value)


@pytest.mark.parametrize("row,fragment", [({**LEVAL_ROW, "instructions": "q1"}, "field 'instructions' is a str"),
                                          ({**LEVAL_ROW, "outputs": 7}, "field 'outputs' is a int"),
                                          ({**LEVAL_ROW, "input": {"a": 1}}, "field 'input' is a dict")])
def test_broken_leval_data_names_the_file(tmp_path, row, fragment):
    from harness.tasks import datasets as data
    (tmp_path / "gsm100.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=fragment):
        data.load_leval("gsm100", str(tmp_path))


@pytest.mark.parametrize("name,content,fragment", [
    ("data.zip", b"PK\x03\x04 not really a zip", "not a valid zip archive"),
    ("data.zip", b"", "not a valid zip archive"),
    ("x.parquet", b"PAR1 garbage PAR1", "not a readable parquet file"),
    ("x.parquet", b"", "not a readable parquet file"),
])
def test_broken_archives_are_data_errors(tmp_path, monkeypatch, name, content, fragment):
    from harness.tasks import datasets as data
    path = tmp_path / name
    path.write_bytes(content)
    monkeypatch.setattr(data, "longbench_archive", lambda *a, **k: path)
    with pytest.raises(DataError, match=fragment):
        if name.endswith(".zip"):
            data.load_longbench("trec")
        else:
            data.read_documents([path])


# ----------------------------------------------------------------------------------------- 3. names, places
@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "x" * 300, "../up", ".hidden", "-flag", "a b", "a/b", "é",
                                  "a\tb", ""])
def test_unsafe_exp_names_are_refused(tmp_path, name):
    data = cfg_dict(tmp_path, exp_name=name)
    with pytest.raises(ConfigError, match="exp_name"):
        from_dict(data, source="n.toml")


@pytest.mark.parametrize("name", ["gali-4k_to_16k.v2", "A+B=c@d,e", "x" * 128])
def test_safe_exp_names_pass(tmp_path, name):
    assert from_dict(cfg_dict(tmp_path, exp_name=name)).exp_name == name


@pytest.mark.parametrize("kind", ["file", "file-parent", "nul", "newline", "exp-is-file"])
def test_unusable_results_dir_is_refused_at_dry_run(tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    results = {"file": str(blocker), "file-parent": str(blocker / "sub"), "nul": str(tmp_path / "r\x00"),
               "newline": str(tmp_path / "r\n"), "exp-is-file": str(tmp_path)}[kind]
    if kind == "exp-is-file":
        (tmp_path / "x").write_text("a file where the experiment dir goes")
    with pytest.raises(ConfigError, match="results_dir"):
        work_summary(plan_config(from_dict(cfg_dict(tmp_path, results_dir=results), source="r.toml")))
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_results_dir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            work_summary(plan_config(from_dict(cfg_dict(tmp_path, results_dir=str(ro / "r")))))
    finally:
        ro.chmod(0o700)


# ----------------------------------------------------------------------------------------------- 4. devices
@pytest.mark.parametrize("device", ["mps", "cuda", "cuda:0", "cuda:7"])
def test_unavailable_devices_are_the_same_clear_error(tmp_path, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "_mps_available", lambda: False)
    cfg = resolve(from_dict(cfg_dict(tmp_path, device=device), source="d.toml"))
    with pytest.raises(ConfigError) as err:
        work_summary(plan_config(cfg))
    assert f"'{device}' requested but this machine has no such device (available: cpu)" in str(err.value)
    assert not (tmp_path / "results").exists()


def test_cuda_index_beyond_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert models.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="cuda:0, cuda:1"):
        models.resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU", "cuda:-1", "mps:0", "cpu:0", ""])
def test_unknown_device_names_are_refused_at_load(tmp_path, device):
    with pytest.raises(ConfigError, match="device"):
        from_dict(cfg_dict(tmp_path, device=device))


# ------------------------------------------------------------------------------------------ 12. shard requests
@pytest.mark.parametrize("flags,env,fragment", [
    (["0/2", "1/3"], {}, "conflicting --shard"),
    (["0/2", "1/2"], {}, "conflicting --shard"),
    (["0/4"], {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, "disagrees with the SLURM job array"),
    (["3/4"], {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "4"},
     "disagrees with the SLURM job array"),
    (["0/2"], {"GALI_SHARDS": "1/2"}, "disagrees with GALI_SHARDS"),
    (["0/3"], {"GALI_SHARDS": "2"}, "GALI_SHARDS"),
])
def test_conflicting_shard_requests_are_refused(flags, env, fragment):
    with pytest.raises(HarnessError, match=fragment):
        parse_shard(flags, env)


@pytest.mark.parametrize("flags,env,expected", [
    (["1/2", "1/2"], {}, (1, 2)),
    (["2/4"], {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, (2, 4)),
    (["1/2"], {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"}, (1, 2)),  # gali-sweep: configs x shards
    (["1/2"], {"GALI_SHARDS": "1/2"}, (1, 2)),
    (None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4)),
])
def test_agreeing_shard_requests_pass(flags, env, expected):
    assert parse_shard(flags, env) == expected


def test_launcher_children_see_no_array_variables(tmp_path, monkeypatch):
    from harness.cluster.launch import shard_commands

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    cfg = from_dict(cfg_dict(tmp_path))
    for s in shard_commands("c.toml", cfg, ["cpu", "cpu"], [], tmp_path):
        assert not any(k.startswith("SLURM_ARRAY_") for k in s.env)
        assert parse_shard([s.cmd[s.cmd.index("--shard") + 1]], s.env) == (s.index, 2)


# --------------------------------------------------------------------------------------------- 13. credentials
@pytest.mark.parametrize("env", [{"HF_TOKEN": "hf_secret_from_env"}, {}])
def test_model_loading_leaves_the_token_to_huggingface_hub(tmp_path, monkeypatch, caplog, env):
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = from_dict(cfg_dict(tmp_path, model="org/gated-model", revision="main"))
    _, kw = models._source(cfg)
    assert "token" not in kw  # huggingface_hub resolves it: HF_TOKEN, else the `hf auth login` file
    with pytest.raises(HarnessError) as err:
        models.load_model_config(cfg)
    assert "hf_secret" not in str(err.value) and "hf_secret" not in caplog.text
    assert "hf auth login" in str(err.value) or "HF_HUB_OFFLINE" in str(err.value)


def test_data_downloads_use_the_same_token_resolution(monkeypatch):
    from harness.tasks import datasets as data
    seen = {}

    def fake_download(repo_id, filename, **kw):
        seen.update(kw)
        raise OSError("offline in the test")

    monkeypatch.setattr(data, "hub_offline", lambda: False)
    monkeypatch.setattr(data, "cached_file", lambda *a, **k: None)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    with pytest.raises(HarnessError, match="download failed"):
        data.hub_file("org/data", "x.jsonl", None, "missing")
    assert "token" not in seen and seen["repo_type"] == "dataset"


def test_int64_bound_is_the_generic_default():
    from harness.core import params as P
    assert P.coerce(INT64_MAX, int, "k") == INT64_MAX
    with pytest.raises(ConfigError, match="64-bit"):
        P.coerce(INT64_MAX + 1, int | None, "k")


def test_load_plan_reports_override_domain(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text(f'task = "needle"\nmodel = "{LAB}"\nmethod = "ntk"\nmax_pe = 512\ntimes = 1\n'
                    '[task_options]\nlengths = [64]\n')
    with pytest.raises(ConfigError, match="'params.factor': must be a finite number"):
        load_plan(path, ["params.factor=nan"])
