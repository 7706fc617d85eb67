"""Registries: the plug-in points where users add what autoseg does not ship.

A :class:`Registry` maps a name (as written in plans.json or on the command line) to
an implementation. Each registry is owned by the module that uses it; :class:`Registry`
lists them all, with what each registers and how to add an entry.

Register with the decorator form (``@NORMALIZATION_SCHEMES.register("my_scheme")``) or by calling
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

    The registries of the package (each a module-level constant of the module that owns it):

    ==========================  ==========================================  ==================================
    registry                    module                                      registers (looked up by)
    ==========================  ==========================================  ==================================
    ``NORMALIZATION_SCHEMES``   :mod:`autoseg.plans.normalization`          ``NormalizationScheme``
                                                                            subclasses (plans.json
                                                                            ``normalization`` ``scheme``)
    ``ARCHITECTURES``           :mod:`autoseg.plans.architectures`          ``ArchitectureSpec``
                                                                            instances: planning numbers,
                                                                            parameter counts
                                                                            (``network.architecture``)
    ``NETWORK_BUILDERS``        :mod:`autoseg.model.builders`               ``(NetworkConfig, in_channels,
                                                                            num_classes) -> nn.Module``
                                                                            (``network.architecture``)
    ``IMAGE_FORMATS``           :mod:`autoseg.io.formats`                   ``ImageFormat`` readers and
                                                                            writers (asked in order which
                                                                            claims a path)
    ``TRAINERS``                :mod:`autoseg.training.trainer`             ``Trainer`` subclasses
                                                                            (``training.trainer``,
                                                                            ``train --trainer``)
    ``OPERATIONS``              :mod:`autoseg.postprocessing.components`    ``(segmentation, step) ->
                                                                            segmentation`` postprocessing
                                                                            operations (a step's
                                                                            ``"operation"``)
    ``BACKENDS``                :mod:`autoseg.inference.backends`           ``Backend`` instances
                                                                            running a network at prediction
                                                                            time (``--backend``)
    ==========================  ==========================================  ==================================

    To add an entry, register it under a new name in a module that is imported before the name
    is looked up: ``@NORMALIZATION_SCHEMES.register("my_scheme")`` on a class or function, or
    ``IMAGE_FORMATS.add("my_format", MyFormat())``; a name already taken needs ``replace=True``.
    A new architecture needs both an ``ARCHITECTURES`` spec and a ``NETWORK_BUILDERS`` builder
    under the same name. The ``--backend`` option's choices are a fixed list
    (``autoseg.commands.predict.BACKEND_CHOICES``): a new backend must be added there too to be
    chosen on the command line.

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
