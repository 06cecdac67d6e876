"""The one shape of a plug-in point: a registry of names -> plug-ins, filled by a decorator where each plug-in
is defined, and read by validation, the library and the CLI alike.

Export formats (`regmix_plugin.export.registry`) and sweep backends (`regmix_plugin.sweep.backend`) are
registries of this kind; predictors keep theirs (`regmix_plugin.fit.registry`), which also loads artifacts.
The built-in plug-ins of a registry are listed by module so that their names resolve without the caller
importing each one first; a plug-in of the user's own registers itself when its module is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from regmix_plugin.errors import ConfigError, check_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> plug-ins of one kind.

    ``kind`` names the plug-ins in messages (``export format``); ``field`` is the flag or file key that
    chooses one (``--format``), named by the error that lists the valid names; the modules ``builtin`` of
    ``package`` are imported on first use, and their plug-ins list first, in that order.
    """

    def __init__(self, kind: str, field: str, package: str, builtin: tuple[str, ...]) -> None:
        self.kind = kind
        self.field = field
        self.package = package
        self.builtin = builtin
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated object this registry's plug-in ``name``."""

        def add(obj: T) -> T:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{self.kind} {getattr(obj, '__name__', obj)!r}: a registered name must be a "
                                  "non-empty string")
            other = self._items.get(name)
            # The same definition again (a module imported twice, e.g. as __main__) replaces itself.
            if other is not None and getattr(other, "__qualname__", None) != getattr(obj, "__qualname__", None):
                raise ConfigError(f"{self.kind} {name!r}: the name is taken by "
                                  f"{getattr(other, '__module__', '?')}.{getattr(other, '__qualname__', other)}; "
                                  "choose another name")
            self._items[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove a plug-in (a test's toy plug-in, so that the registry is as it found it)."""
        self._items.pop(name, None)

    def _loaded(self) -> dict[str, T]:
        # Imported here, not when the registry is made, so that importing the registry stays cheap.
        for module in self.builtin:
            importlib.import_module(f"{self.package}.{module}")
        order = {f"{self.package}.{m}": i for i, m in enumerate(self.builtin)}
        names = list(self._items)
        ranked = sorted(names, key=lambda n: (order.get(getattr(self._items[n], "__module__", ""), len(order)),
                                              names.index(n)))
        return {n: self._items[n] for n in ranked}

    def names(self) -> list[str]:
        """The registered names: the built-in ones first, then any registered elsewhere."""
        return list(self._loaded())

    def get(self, name: str, field: str | None = None) -> T:
        """The plug-in ``name``; an unknown name is a one-line ConfigError that lists the valid ones."""
        items = self._loaded()
        check_choice(field or self.field, name, items)
        return items[name]
