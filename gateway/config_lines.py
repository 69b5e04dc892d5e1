"""Where each key of a TOML text is: line numbers for config problems (``tomllib`` gives none).

A small scanner, not a parser: it follows table headers (``[a.b]``,
``[[routes]]``) and ``key = value`` lines, skips values (strings, multi-line
strings and arrays, inline tables, comments) without reading them, and runs
only on text that ``tomllib`` has already accepted.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Iterable, Optional

_BARE = re.compile(r"[A-Za-z0-9_-]+")


class KeyLines:
    """Key path (as in a config problem: names, and indexes into arrays of tables) -> line number."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple, int] = {}
        try:
            _Scanner(text, self.lines).run()
        except (IndexError, ValueError, tomllib.TOMLDecodeError):  # text the scanner cannot follow: fewer lines
            pass

    def line(self, loc: Iterable[Any]) -> Optional[int]:
        """The line of ``loc``, or of its nearest enclosing key that has one (a key inside an inline table)."""
        path = tuple(loc)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


class _Scanner:
    def __init__(self, text: str, lines: dict[tuple, int]) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.lines = lines
        self.arrays: dict[tuple, int] = {}  # an array of tables -> the index of its last table

    def run(self) -> None:
        text = self.text
        table: tuple = ()
        while self.i < len(text):
            char = text[self.i]
            if char in " \t\r":
                self.i += 1
            elif char == "\n":
                self.line += 1
                self.i += 1
            elif char == "#":
                self._to_end_of_line()
            elif char == "[":
                double = text.startswith("[[", self.i)
                self.i += 2 if double else 1
                table = self._resolve(self._key(), double)
                self.lines.setdefault(table, self.line)
                self._to_end_of_line()
            else:
                parts = self._key()
                for end in range(1, len(parts) + 1):
                    self.lines.setdefault((*table, *parts[:end]), self.line)
                self.i = text.index("=", self.i) + 1
                self._skip_value()

    def _resolve(self, parts: list[str], double: bool) -> tuple:
        """A header's key path, with the index of the current table of every array of tables on it."""
        path: list[Any] = []
        for position, part in enumerate(parts):
            path.append(part)
            last = position == len(parts) - 1
            if tuple(path) in self.arrays and not (double and last):
                path.append(self.arrays[tuple(path)])
        if double:
            index = self.arrays[tuple(path)] = self.arrays.get(tuple(path), -1) + 1
            path.append(index)
        return tuple(path)

    def _key(self) -> list[str]:
        """A dotted key: bare, "basic" or 'literal' parts."""
        text = self.text
        parts = []
        while True:
            while text[self.i] in " \t":
                self.i += 1
            char = text[self.i]
            if char == '"':
                end = self.i + 1
                while text[end] != '"':
                    end += 2 if text[end] == "\\" else 1
                parts.append(tomllib.loads(f"k = {text[self.i : end + 1]}")["k"])
                self.i = end + 1
            elif char == "'":
                end = text.index("'", self.i + 1)
                parts.append(text[self.i + 1 : end])
                self.i = end + 1
            else:
                match = _BARE.match(text, self.i)
                if match is None:
                    raise ValueError(f"no key at line {self.line}")
                parts.append(match.group())
                self.i = match.end()
            while text[self.i] in " \t":
                self.i += 1
            if text[self.i] != ".":
                return parts
            self.i += 1

    def _to_end_of_line(self) -> None:
        end = self.text.find("\n", self.i)
        self.i = len(self.text) if end < 0 else end

    def _skip_value(self) -> None:
        """Past a value, up to the end of its (last) line; counts the lines it spans."""
        text = self.text
        depth = 0
        while self.i < len(text):
            char = text[self.i]
            if char == "\n":
                if depth == 0:
                    return
                self.line += 1
                self.i += 1
            elif char == "#":
                self._to_end_of_line()
            elif char in "[{":
                depth += 1
                self.i += 1
            elif char in "]}":
                depth -= 1
                self.i += 1
            elif text.startswith('"""', self.i) or text.startswith("'''", self.i):
                self._skip_multiline_string(text[self.i])
            elif char == '"':
                self.i += 1
                while text[self.i] != '"':
                    self.i += 2 if text[self.i] == "\\" else 1
                self.i += 1
            elif char == "'":
                self.i = text.index("'", self.i + 1) + 1
            else:
                self.i += 1

    def _skip_multiline_string(self, quote: str) -> None:
        text = self.text
        self.i += 3
        while not text.startswith(quote * 3, self.i):
            if text[self.i] == "\\" and quote == '"':
                self.i += 1
            if text[self.i] == "\n":
                self.line += 1
            self.i += 1
        self.i += 3
        while self.i < len(text) and text[self.i] == quote:  # up to two quotes may end the content
            self.i += 1
