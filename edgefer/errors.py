"""The exception tree. Everything edgefer raises on purpose derives from ``EdgeferError``.

EdgeferError
├── InputError        bad user input: missing path, unreadable media, invalid option
├── ConfigError       invalid configuration file, key or value
├── ModelError        missing, corrupt or mismatched model artifact or engine plan
├── OutputError       an output cannot be written (exists, unwritable, disk full)
└── MissingDependency an optional extra is not installed (message names the pip command)
"""

from __future__ import annotations


class EdgeferError(Exception):
    """Root of every error edgefer raises deliberately; the CLI prints these as one line."""

    exit_code = 1


class InputError(EdgeferError):
    exit_code = 2


class ConfigError(EdgeferError):
    exit_code = 2


class ModelError(EdgeferError):
    exit_code = 3


class OutputError(EdgeferError):
    exit_code = 4


class MissingDependency(EdgeferError):
    exit_code = 5

    def __init__(self, module: str, install: str) -> None:
        super().__init__(f"{module} is not installed; run: pip install '{install}'")
        self.module = module
        self.install = install


def require(module: str, extra: str | None = None):
    """Import a heavy dependency, or raise an error naming the exact install command.

    ``extra`` names the edgefer extra that provides it; without one, the command installs the
    module's own package (a core dependency, or one that a check needs without its extra's rest).
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        install = f"edgefer[{extra}]" if extra else module.split(".")[0]
        raise MissingDependency(module, install) from err
