"""Notebook parameters: the flat literals of a papermill ``parameters`` cell, overrides given as ``NAME=VALUE``, and
one check of them all before anything runs (the CLI's ``-p``, and the notebook's own first cell).

A notebook declares what each parameter may be with a spec, ``{name: Param(...)}``; ``check_params`` refuses an
unknown name, a value of the wrong type or out of range, and a missing file, each in one line naming the parameter.
"""

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from gridit_core.errors import GriditError


@dataclass(frozen=True)
class Param:
    """What one notebook parameter may be: its type, an inclusive range or a list of choices, or a file path."""

    kind: type  # int, float, str or bool; a float parameter takes ints too
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    file: bool = False  # a path to an existing file, relative to the notebook's folder; "" means none

    def check(self, name, value, base=None):
        """``value`` converted to ``kind`` (an int to a float), or a ``GriditError`` naming ``name``."""
        ok = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise GriditError(f"{name} must be {_kind_name(self.kind)}, got {value!r}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise GriditError(f"{name} must be {_range_text(self.low, self.high)}, got {value!r}")
        if self.choices and value not in self.choices:
            raise GriditError(f"{name} must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
        if self.file and value and not (Path(base or ".") / value).is_file():
            raise GriditError(f"{name}: file {value} does not exist (relative to {Path(base or '.').resolve()})")
        return value


def _kind_name(kind):
    return {int: "an integer", float: "a number", str: "a string", bool: "True or False"}.get(kind, kind.__name__)


def _range_text(low, high):
    if high is None:
        return f">= {low:g}"
    if low is None:
        return f"<= {high:g}"
    return f"in [{low:g}, {high:g}]"


def _notebook(path):
    try:
        nb = json.loads(Path(path).read_text())
        nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GriditError(f"cannot read notebook {path}: {e}") from None
    return nb


def notebook_metadata(path):
    """The metadata dict of notebook ``path``."""
    return _notebook(path).get("metadata", {})


def read_parameters(path):
    """The ``parameters`` cell of notebook ``path`` as ``{NAME: default}``; every line there is ``NAME = literal``."""
    path = Path(path)
    cells = _notebook(path)["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise GriditError(f"notebook {path} needs exactly one cell tagged 'parameters', found {len(tagged)}")
    source = "".join(tagged[0]["source"])
    params = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise GriditError(f"the parameters cell of {path} must hold only NAME = literal lines: {ast.unparse(node)}")
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise GriditError(f"parameter {node.targets[0].id} of {path} is not a literal: {ast.unparse(node.value)}") from None
    return params


def parse_overrides(items, defaults):
    """``["NAME=VALUE", ...]`` -> ``{NAME: value}``: a Python literal, or plain text for a string parameter.

    A name the notebook does not take, or text that is no literal for a parameter that is not a string, is refused.
    """
    out = {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq or not name.isidentifier():
            raise GriditError(f"-p takes NAME=VALUE with NAME a notebook parameter, got {item!r}")
        if name not in defaults:
            raise GriditError(f"unknown parameter {name}; the notebook takes: {', '.join(defaults)}")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if not isinstance(defaults[name], str):
                raise GriditError(f"{name}={text}: not a value of the parameter's type "
                                  f"({_kind_name(type(defaults[name]))})") from None  # fmt: skip
            out[name] = text  # a bare path or word for a string parameter
    return out


def check_params(values, spec, base=None):
    """Every parameter of ``spec`` checked and converted; ``values`` may hold other names too (a notebook's
    ``globals()``), but must hold each of ``spec``'s. ``base`` is the folder that relative file paths start from."""
    missing = [name for name in spec if name not in values]
    if missing:
        raise GriditError(f"parameters missing: {', '.join(missing)}")
    return {name: p.check(name, values[name], base) for name, p in spec.items()}
