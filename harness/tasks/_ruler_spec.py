"""RULER's task table: the 13 tasks of its `synthetic.yaml`, their templates, answer prefixes and generation budgets.

Wording, counts and numbers are RULER's (NVIDIA/RULER, `scripts/synthetic.yaml`, `scripts/data/synthetic/constants.py`
and the generator scripts); see docs/tasks.md for the few deviations of this offline re-implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RULER_TASKS = ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
               "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2"]
RULER_LENGTHS = [4096, 8192, 16384, 32768, 65536, 131072]
EFFECTIVE_THRESHOLD = 85.6  # Llama-2-7B-chat's RULER average at 4K, RULER's "effective length" threshold

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
DOCUMENT = "Document {i}:\n{document}"
# needle depths (percent): RULER's np.round(np.linspace(0, 100, 40)) (no value sits on a .5 tie, so round() agrees)
DEPTHS = [round(100 * i / 39) for i in range(40)]

TEMPLATES: dict[str, dict[str, Any]] = {
    "niah": {
        "max_new_tokens": 128,
        "template": "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize "
                    "it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special "
                    "magic {type_needle_v} for {query} mentioned in the provided text?",
        "answer_prefix": " The special magic {type_needle_v} for {query} mentioned in the provided text are",
        "metric": "all",
    },
    "variable_tracking": {
        "max_new_tokens": 30,
        "template": "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
                    "{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.",
        "answer_prefix": " Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
                         "variables are assigned the value {query}, they are: ",
        "metric": "all",
    },
    "common_words_extraction": {
        "max_new_tokens": 120,
        "template": "Below is a numbered list of words. In these words, some appear more often than others. Memorize "
                    "the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the "
                    "above list?",
        "answer_prefix": " Answer: The top 10 words that appear most often in the list are:",
        "metric": "all",
    },
    "freq_words_extraction": {
        "max_new_tokens": 50,
        "template": "Read the following coded text and track the frequency of each coded word. Find the three most "
                    "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please "
                    "ignore the dots '....'. What are the three most frequently appeared words in the above coded "
                    "text?",
        "answer_prefix": " Answer: According to the coded text above, the three most frequently appeared words are:",
        "metric": "all",
    },
    "qa": {
        "max_new_tokens": 32,
        "template": "Answer the question based on the given documents. Only give me the answer and do not output any "
                    "other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on "
                    "the given documents. Only give me the answer and do not output any other words.\n\nQuestion: "
                    "{query}",
        "answer_prefix": " Answer:",
        "metric": "part",
    },
}


@dataclass(frozen=True)
class RulerTask:
    """One entry of RULER's synthetic.yaml: the generator family and its arguments."""

    family: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def max_new_tokens(self) -> int:
        return int(TEMPLATES[self.family]["max_new_tokens"])

    @property
    def metric(self) -> str:
        return str(TEMPLATES[self.family]["metric"])


def _niah(haystack: str, k: str, v: str, nk: int = 1, nv: int = 1, nq: int = 1) -> RulerTask:
    return RulerTask("niah", {"type_haystack": haystack, "type_needle_k": k, "type_needle_v": v,
                              "num_needle_k": nk, "num_needle_v": nv, "num_needle_q": nq})


SPECS: dict[str, RulerTask] = {
    "niah_single_1": _niah("noise", "words", "numbers"),
    "niah_single_2": _niah("essay", "words", "numbers"),
    "niah_single_3": _niah("essay", "words", "uuids"),
    "niah_multikey_1": _niah("essay", "words", "numbers", nk=4),
    "niah_multikey_2": _niah("needle", "words", "numbers"),
    "niah_multikey_3": _niah("needle", "uuids", "uuids"),
    "niah_multivalue": _niah("essay", "words", "numbers", nv=4),
    "niah_multiquery": _niah("essay", "words", "numbers", nq=4),
    "vt": RulerTask("variable_tracking", {"type_haystack": "noise", "num_chains": 1, "num_hops": 4}),
    "cwe": RulerTask("common_words_extraction", {"freq_cw": 30, "freq_ucw": 3, "num_cw": 10}),
    "fwe": RulerTask("freq_words_extraction", {"alpha": 2.0}),
    "qa_1": RulerTask("qa", {"dataset": "squad"}),
    "qa_2": RulerTask("qa", {"dataset": "hotpotqa"}),
}
