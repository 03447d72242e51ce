"""A small name -> class registry with aliases (methods and tasks use one each)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast, overload

from harness.core.errors import ConfigError, suggest

T = TypeVar("T")
S = TypeVar("S")


class Registry(Generic[T]):
    """Maps canonical names and aliases to registered classes."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._items: dict[str, type[T]] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    @overload
    def register(self, item: type[S], /) -> type[S]: ...

    @overload
    def register(self, item: str, /, *, aliases: tuple[str, ...] = (),
                 **attrs: Any) -> Callable[[type[S]], type[S]]: ...

    def register(self, item: type[S] | str, /, *, aliases: tuple[str, ...] = (),
                 **attrs: Any) -> type[S] | Callable[[type[S]], type[S]]:
        """Class decorator, two spellings: `@REG.register("name", aliases=(...), invariants=...)` sets those class
        attributes and registers the class; bare `@REG.register` registers a class that sets `name` (and `aliases`)
        itself. The decorated class keeps its own type. Only attributes the class already declares can be set."""
        if isinstance(item, str):
            name = item

            def decorate(cls: type[S]) -> type[S]:
                unknown = sorted(k for k in attrs if not hasattr(cls, k))
                if unknown:
                    raise TypeError(f"{cls.__name__} declares no attribute {unknown} to set at registration")
                for key, value in {"name": name, "aliases": tuple(aliases), **attrs}.items():
                    setattr(cls, key, value)
                return self._add(cls)

            return decorate
        return self._add(item)

    def _add(self, cls: type[S]) -> type[S]:
        name = cls.name  # type: ignore[attr-defined]
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._items[name] = cast("type[T]", cls)
        for alias in getattr(cls, "aliases", ()):
            self._aliases[alias] = name
        return cls

    def unregister(self, name: str) -> type[T]:
        """Remove the class registered under the canonical `name` and its aliases (the inverse of `register`)."""
        cls = self._items.pop(name)
        self._aliases = {alias: n for alias, n in self._aliases.items() if n != name}
        return cls

    def _load_all(self) -> None:
        """Import every module of the package so their decorators run (no central list to edit)."""
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def canonical(self, name: str, key: str | None = None) -> str:
        """Resolve an alias to the canonical name, or raise a ConfigError naming `key`."""
        self._load_all()
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = sorted(self._items) + sorted(self._aliases)
        raise ConfigError(
            key or self.kind,
            f"unknown {self.kind} '{name}'{suggest(name, known)}",
            f"use one of: {', '.join(sorted(self._items))}",
        )

    def get(self, name: str, key: str | None = None) -> type[T]:
        """Return the class registered under `name` (canonical or alias)."""
        return self._items[self.canonical(name, key)]

    def names(self) -> list[str]:
        """Canonical names, sorted."""
        self._load_all()
        return sorted(self._items)

    def aliases(self) -> dict[str, str]:
        """Alias -> canonical name."""
        self._load_all()
        return dict(self._aliases)

    def all(self) -> dict[str, type[T]]:
        """Canonical name -> class."""
        self._load_all()
        return dict(self._items)

    def filter(self, pred: Callable[[type[T]], bool]) -> list[str]:
        """Canonical names whose class satisfies `pred`."""
        return [n for n, c in self.all().items() if pred(c)]
