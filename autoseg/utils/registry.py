"""Registries: the plug-in points where users add what autoseg does not ship.

A :class:`Registry` maps a name (as written in plans.json or on the command line) to
an implementation. Each registry is owned by the module that uses it:

=====================================  ==========================================
registry                               owner
=====================================  ==========================================
normalization schemes                  :mod:`autoseg.plans.normalization`
architecture specs (planning numbers)  :mod:`autoseg.plans.architectures`
network builders (torch modules)       :mod:`autoseg.model.builders`
image readers and writers              :mod:`autoseg.io.formats`
trainers                               :mod:`autoseg.training.trainer`
postprocessing operations              :mod:`autoseg.postprocessing.components`
=====================================  ==========================================

Register with the decorator form (``@SCHEMES.register("my_scheme")``) or by calling
:meth:`Registry.add`; look up with :meth:`Registry.get`, which raises a one-line
error naming what was asked for and what is known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autoseg.errors import AutosegInputError

T = TypeVar("T")


class UnknownNameError(AutosegInputError, KeyError):
    """A name that is not registered (usually from plans.json or an option); ``str()`` is one line."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> implementation, in registration order.

    Args:
        kind: what the entries are, for messages (e.g. ``"normalization scheme"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, replace: bool = False) -> T:
        """Register ``entry`` under ``name``; a second entry under the same name needs ``replace``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to override it)")
        self._entries[name] = entry
        return entry

    def register(self, name: str, replace: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def decorate(entry: T) -> T:
            return self.add(name, entry, replace)
        return decorate

    def remove(self, name: str) -> None:
        """Unregister ``name`` (e.g. a test's temporary entry)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry registered under ``name``; :class:`UnknownNameError` otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.kind} {name!r} (known: {', '.join(self._entries)})") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
