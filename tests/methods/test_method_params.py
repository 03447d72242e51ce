"""The method contract around Params: the type argument names the Params class, field constraints are checked."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field

import pytest

from harness.core import params as P
from harness.core.errors import ConfigError
from harness.methods.base import METHODS, Method, NoParams
from harness.methods.common.frequency import FactorParams, FrequencyMethod

CFG = types.SimpleNamespace(max_pe=None, source="")


@dataclass
class ToyParams:
    width: int = field(default=2, metadata=P.domain(ge=1, le=8))


def test_params_come_from_the_type_argument():
    class Toy(Method[ToyParams]):
        name = "toy"

    class ToyChild(Toy):  # inherits its parent's Params
        pass

    class Declared(Method[ToyParams]):  # an explicit declaration wins
        Params = FactorParams

    class Plain(Method):
        pass

    class Freq(FrequencyMethod[FactorParams]):
        pass

    assert (Toy.Params, ToyChild.Params, Declared.Params, Plain.Params, Freq.Params) == (
        ToyParams, ToyParams, FactorParams, NoParams, FactorParams)
    assert Toy(ToyParams(3), CFG).params.width == 3


def test_every_registered_method_builds_its_default_params():
    for name, cls in METHODS.all().items():
        assert dataclasses.is_dataclass(cls.Params), name
        P.build(cls.Params, {})


@pytest.mark.parametrize("method,low,high", [("llama3", "low_freq_factor", "high_freq_factor"),
                                             ("yarn", "beta_slow", "beta_fast"),
                                             ("ntk_by_parts", "beta_slow", "beta_fast")])
def test_ordered_fields_must_increase(method, low, high):
    cls = METHODS.get(method)
    cls.validate(P.build(cls.Params, {"factor": 4.0}), CFG, 64)  # the defaults are ordered
    for lo, hi in ((4.0, 2.0), (3.0, 3.0)):
        with pytest.raises(ConfigError, match=f"params.{high}"):
            cls.validate(P.build(cls.Params, {"factor": 4.0, low: lo, high: hi}), CFG, 64)
    cls.validate(P.build(cls.Params, {"factor": 4.0, low: 2.0, high: 3.0}), CFG, 64)
