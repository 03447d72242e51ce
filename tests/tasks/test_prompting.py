"""Prompt formats: reference (Llama-2 / Llama-3 exactly as GALI), chat_template, raw, auto, the no-wrap list."""

from __future__ import annotations

import pytest

from harness.core.errors import ConfigError
from harness.tasks.prompting import (
    NO_WRAP_DATASETS,
    REFERENCE_LLAMA3_SYSTEM,
    encode_chat,
    encode_prompt,
    newline_token_id,
    reference_family,
    stop_token_ids,
)
from tests.tasks.conftest import LLAMA2_NAME, LLAMA3_NAME, llama2_render, llama3_render, plain, rendered

PROMPT = "Read this.\n\nQuestion: why?\nAnswer:"


def test_reference_constants_are_the_published_ones():
    assert REFERENCE_LLAMA3_SYSTEM == "You are a pirate chatbot who always responds in pirate speak!"
    assert NO_WRAP_DATASETS == {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}


def test_reference_llama2_is_inst_without_spaces_or_system(tok):
    ids = encode_prompt(tok, PROMPT, "reference", LLAMA2_NAME, "narrativeqa", system_prompt="ignored")
    assert ids == plain(tok, "[INST]Read this.\n\nQuestion: why?\nAnswer:[/INST]")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_reference_llama3_uses_the_pirate_system_prompt(tok3):
    ids = encode_prompt(tok3, PROMPT, "reference", LLAMA3_NAME, "narrativeqa", system_prompt="ignored")
    assert ids == rendered(tok3, llama3_render(PROMPT, "You are a pirate chatbot who always responds in pirate speak!"))


@pytest.mark.parametrize("dataset", sorted(NO_WRAP_DATASETS))
@pytest.mark.parametrize("fmt, name", [("reference", LLAMA2_NAME), ("reference", LLAMA3_NAME),
                                       ("chat_template", LLAMA3_NAME), ("auto", LLAMA3_NAME)])
def test_no_wrap_datasets_are_plain_in_every_format(tok3, dataset, fmt, name):
    assert encode_prompt(tok3, PROMPT, fmt, name, dataset) == plain(tok3, PROMPT)


def test_chat_template_has_no_system_prompt_by_default_and_takes_the_configured_one(tok3, tok2):
    assert encode_prompt(tok3, PROMPT, "chat_template", "any", "qasper") == rendered(tok3, llama3_render(PROMPT))
    assert encode_prompt(tok3, PROMPT, "chat_template", "any", "qasper", "Be brief.") == \
        rendered(tok3, llama3_render(PROMPT, "Be brief."))
    assert encode_prompt(tok2, PROMPT, "chat_template", "any", "qasper", "Be brief.") == \
        rendered(tok2, llama2_render(PROMPT, "Be brief."))


def test_raw_and_auto(tok, tok3):
    assert encode_prompt(tok3, PROMPT, "raw", LLAMA3_NAME, "qasper", "sys") == plain(tok3, PROMPT)
    assert encode_prompt(tok, PROMPT, "auto", LLAMA3_NAME, "qasper") == plain(tok, PROMPT)  # no template -> raw
    assert encode_prompt(tok3, PROMPT, "auto", "x", "qasper") == rendered(tok3, llama3_render(PROMPT))


def test_reference_family_by_case_sensitive_name_then_template(tok, tok2, tok3):
    assert reference_family("meta-llama/Llama-2-7b-chat-hf") == "llama2"
    assert reference_family("meta-llama/Meta-Llama-3-8B-Instruct") == "llama3"
    assert reference_family("/models/llama-2-7b") is None  # the reference's test is case-sensitive
    assert reference_family("/models/x", tok3) == "llama3"
    assert reference_family("/models/x", tok2) == "llama2"
    assert reference_family("/models/x", tok) is None


def test_reference_on_an_unknown_family_is_a_clear_config_error(tok):
    with pytest.raises(ConfigError, match="prompt_format.*chat_template"):
        encode_prompt(tok, PROMPT, "reference", "/models/mistral", "qasper")


def test_chat_template_without_template_is_a_config_error(tok):
    with pytest.raises(ConfigError, match="raw"):
        encode_prompt(tok, PROMPT, "chat_template", "x", "qasper")


def test_system_role_rejected_by_the_template_is_prepended(tok):
    import copy

    t = copy.deepcopy(tok)
    t.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
                       "{% endif %}<u>{{ m['content'] }}</u>{% endfor %}")
    assert encode_chat(t, "Q", "S") == rendered(t, "<u>S\n\nQ</u>")


def test_stop_ids_and_samsum_newline(tok3):
    eot = tok3.convert_tokens_to_ids("<|eot_id|>")
    assert stop_token_ids(tok3) == [tok3.eos_token_id, eot]
    nl = newline_token_id(tok3)
    assert tok3.decode([nl]) == "\n"
