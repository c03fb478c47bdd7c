"""Packages whose public names load on first use (PEP 562): ``import helpers`` and ``import helpers.runner.pipeline``
import no Keras, and a name's module is imported when the name is first used."""

from __future__ import annotations

import sys

from helpers.common.native_logs import quiet_import

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose public names load from its modules on first use (PEP 562).

    ``exports`` maps a public name to the module (below ``package``) that defines it; the first lookup imports the
    module (:func:`quiet_import`) and keeps the value in the package's namespace.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str):
        if name in exports:
            value = getattr(quiet_import(f"{package}.{exports[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
