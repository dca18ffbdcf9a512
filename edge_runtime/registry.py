"""A small generic name -> factory registry, instantiated once per kind of component.

Used for exit policies, inference backends, energy meters, device profiles, model
builders and exit-head types (the shape of timm's ``register_model``). Entries can
be registered eagerly (an object) or lazily (a ``"module:attribute"`` string that is
imported on first use), so optional dependencies are only imported when asked for.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from edge_runtime.errors import ConfigError, EdgeRuntimeError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """Raised when a registry is asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0] if self.args else ""


class Registry(Generic[T]):
    """Maps names to components of one kind.

    Example:
        >>> policies = Registry("exit policy")
        >>> @policies.register("never")
        ... class Never: ...
        >>> policies.get("never").__name__
        'Never'
    """

    def __init__(self, kind: str, *, plugins: str | tuple[str, ...] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._plugins: tuple[str, ...] | None = (plugins,) if isinstance(plugins, str) else plugins

    def _discover(self) -> None:
        """Import the plug-in package's modules (``plugins=``) before the first look-up, so entries a
        method registers from its own folder are there without any shared file naming it."""
        if self._plugins is not None:
            packages, self._plugins = self._plugins, None
            for package in packages:
                discover_plugins(package)

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is None."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(target: T) -> T:
            self._add(name, target)
            return target

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attribute"`` to be imported on first :meth:`get`."""
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} target must look like 'module:attribute', got {target!r}")
        self._add(name, target)

    def _add(self, name: str, obj: T | str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the component registered as ``name``, importing it if it was lazy."""
        if name not in self._entries:
            self._discover()
        try:
            entry = self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise EdgeRuntimeError(
                    f"{self.kind} {name!r} needs a package that is not installed: {exc}"
                ) from exc
            entry = getattr(module, attr)
            self._entries[name] = entry
        return entry

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Look ``name`` up and call it with the given arguments."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._discover()
        return sorted(self._entries)

    def ordered(self) -> list[str]:
        """All registered names in registration order (built-ins first, then plug-ins)."""
        self._discover()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)


_discovered: set[str] = set()


def discover_plugins(package: str) -> None:
    """Import every module and sub-package directly under ``package`` once (e.g. ``edge_runtime.methods``).

    Example:
        >>> discover_plugins("edge_runtime.methods")
    """
    if package in _discovered:
        return
    _discovered.add(package)
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        importlib.import_module(f"{package}.{info.name}")
