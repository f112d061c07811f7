"""The project's error types: one clear message naming the file, the element and what was expected."""

from __future__ import annotations

import os


class SyconnError(Exception):
    """Base of every error syconn_ng raises on purpose; the CLI prints it without a traceback."""


class InputError(SyconnError):
    """Bad input: names the file, the element (and line where known) and what was expected.

    `path` is the offending file or layer; `element` a short locator such as
    ``<node id="7">`` or ``chunk 0-128_0-128_0-64``; `line` a 1-based line number.
    """

    def __init__(self, path, message: str, *, element: str | None = None, line: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.element = element
        self.line = line
        self.reason = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        if element:
            where += f": {element}"
        super().__init__(f"{where}: {message}")


class ConfigError(InputError):
    """A syconn.toml value that is missing, of the wrong type or out of range."""


class StageError(SyconnError):
    """A stage finished with failed tasks; the message summarises which and why."""
