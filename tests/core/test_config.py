"""Config loading: the reference's TOML style, our additions, overrides, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.core.errors import ConfigError, HarnessError
from harness.stages.resolve import load_plan

REFERENCE_STYLE = """
task = "needle"
model = "{model}"
method = "repro_yarn"
exp_name = "yarn-llama2-7b-4k-to-16k"
max_pe = 16384
test = false
stride = 2000
times = 20
min_k = 1
max_k = 32
gap = 4
factor = 4
# ori_max_position_embeddings = 4096

[params]
use_chunk_softmax = false
chunk_coe = 3000
appro_attn = true
local_window = 1
noise_type = "gaussian"
addon_relcoef = 1
std_base = 1.0
scale_mean = 0
scale_std = 1
# group_size = 3
# window_size = 4096
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def base(model: Path, **extra: str) -> str:
    lines = ['task = "needle"', f'model = "{model}"', 'method = "original"', 'exp_name = "x"', "times = 1",
             "min_k = 1", "max_k = 1", "gap = 1"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def test_reference_style_toml_loads(tmp_path, tiny_model_dir):
    cfg = load_plan(write(tmp_path, REFERENCE_STYLE.format(model=tiny_model_dir))).cfg
    assert cfg.method == "yarn" and cfg.task == "needle"
    assert cfg.params["factor"] == 4.0  # top-level factor folded into the method's params
    assert cfg.max_pe == 16384 and cfg.stride == 2000 and cfg.times == 20
    assert cfg.exp_name == "yarn-llama2-7b-4k-to-16k"


@pytest.mark.parametrize("alias,canonical", [("repro_original", "original"), ("repro_ntk", "ntk"),
                                             ("repro_dynamic_ntk", "dynamic_ntk"), ("repro_yarn", "yarn")])
def test_reference_method_aliases(tmp_path, tiny_model_dir, alias, canonical):
    text = base(tiny_model_dir).replace('"original"', f'"{alias}"') + "factor = 2\n"
    assert load_plan(write(tmp_path, text)).cfg.method == canonical


def test_factor_in_params_and_default_from_max_pe(tmp_path, tiny_model_dir):
    text = base(tiny_model_dir).replace('"original"', '"ntk"') + "[params]\nfactor = 3\n"
    assert load_plan(write(tmp_path, text)).cfg.params["factor"] == 3.0
    text = base(tiny_model_dir, max_pe="256").replace('"original"', '"ntk"')
    assert load_plan(write(tmp_path, text)).cfg.params["factor"] is None  # resolved to max_pe / M at apply time


def test_overrides_and_exp_name_default(tmp_path, tiny_model_dir):
    text = base(tiny_model_dir).replace('exp_name = "x"\n', "")
    cfg = load_plan(write(tmp_path, text, "my-run.toml"), ["times=3", "task_options.depths=2", "seed=7"]).cfg
    assert cfg.exp_name == "my-run" and cfg.times == 3 and cfg.task_options["depths"] == 2 and cfg.seed == 7


MALFORMED = [
    ("tsak = 1\n", "tsak", "did you mean 'task'"),
    ("method = 'gail'\n", "method", "unknown method 'gail'"),
    ("task = 'longbenhc'\n", "task", "unknown task"),
    ("max_pe = 'big'\n", "max_pe", "expected int"),
    ("max_pe = -5\n", "max_pe", "must be ≥ 1"),
    ("times = 0\n", "times", "must be ≥ 1"),
    ("dtype = 'fp8'\n", "dtype", "use one of"),
    ("attn_implementation = 'flash3'\n", "attn_implementation", "use one of"),
    ("device = 'tpu'\n", "device", "unknown device"),
    ("seed = 1.5\n", "seed", "expected int"),
    ("test = 'yes'\n", "test", "expected bool"),
    ("subsets = 'needle'\n", "subsets", "expected list"),
    ("exp_name = 'a/b'\n", "exp_name", "not a safe directory name"),
    ("min_k = 5\n", "min_k", "larger than max_k"),
    ("[params]\nchunk_cooe = 3\n", "params.chunk_cooe", "unknown parameter"),
    ("[task_options]\ndepth = 3\n", "task_options.depth", "did you mean 'depths'"),
    ("[task_options]\nlengths = []\n", "task_options.lengths", "non-empty list"),
    ("factor = -1\n", "factor", "must be ≥ 1"),
    ("device_map = 'balanced'\n", "device_map", "unsupported value"),
]


@pytest.mark.parametrize("line,key,fragment", MALFORMED)
def test_malformed_configs_name_the_key(tmp_path, tiny_model_dir, line, key, fragment):
    text = base(tiny_model_dir)
    first = line.split("=")[0].strip()
    if not line.startswith("["):  # replace an existing key rather than duplicating it
        text = "\n".join(ln for ln in text.splitlines() if ln.split("=")[0].strip() != first) + "\n"
    path = write(tmp_path, text + line)
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    message = str(err.value)
    assert f"'{key}'" in message and fragment in message and str(path) in message
    assert "Fix:" in message


def test_missing_required_key(tmp_path, tiny_model_dir):
    path = write(tmp_path, base(tiny_model_dir).replace('method = "original"\n', ""))
    with pytest.raises(ConfigError, match="'method': missing required key"):
        load_plan(path)


def test_missing_task_key(tmp_path, tiny_model_dir):
    path = write(tmp_path, base(tiny_model_dir).replace("times = 1\n", ""))
    with pytest.raises(ConfigError, match="'times'.*trials"):
        load_plan(path)


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(HarnessError, match="invalid TOML"):
        load_plan(write(tmp_path, "task = \n"))
    with pytest.raises(HarnessError, match="config file not found"):
        load_plan(tmp_path / "nope.toml")


def test_cli_error_is_one_line_exit_2(tmp_path, tiny_model_dir):
    path = write(tmp_path, base(tiny_model_dir) + "tsak = 1\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli.run", "--cfg", str(path), "--dry-run"],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "did you mean 'task'" in proc.stderr
