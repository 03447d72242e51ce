"""core.registry: both decorator spellings register the same way; aliases resolve; mistakes are refused."""

import pytest

from harness.core.errors import ConfigError
from harness.core.registry import Registry


class Base:
    name = ""
    aliases: tuple[str, ...] = ()
    invariants: tuple[str, ...] = ()


def make() -> Registry[Base]:
    reg: Registry[Base] = Registry("thing", "harness.core")  # a package without registrations
    reg._loaded = True  # nothing to import
    return reg


def test_named_decorator_sets_the_class_attributes_and_registers():
    reg = make()

    @reg.register("alpha", aliases=("a", "first"), invariants=("x",))
    class Alpha(Base):
        pass

    assert (Alpha.name, Alpha.aliases, Alpha.invariants) == ("alpha", ("a", "first"), ("x",))
    assert reg.get("a") is Alpha and reg.get("first") is Alpha and reg.names() == ["alpha"]
    assert Base.name == "" and Base.invariants == ()  # set on the subclass only


def test_bare_decorator_reads_the_class_attributes():
    reg = make()

    @reg.register
    class Beta(Base):
        name = "beta"
        aliases = ("b",)

    assert reg.canonical("b") == "beta" and reg.get("beta") is Beta


def test_mistakes_are_refused():
    reg = make()
    with pytest.raises(TypeError, match="invariantz"):
        reg.register("gamma", invariantz=())(type("Gamma", (Base,), {}))
    reg.register("delta")(type("Delta", (Base,), {}))
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("delta")(type("Delta2", (Base,), {}))
    with pytest.raises(ConfigError, match="unknown thing 'delt'"):
        reg.get("delt")
    reg.unregister("delta")
    assert reg.names() == []
