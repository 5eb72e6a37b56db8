"""amqtt is used in one module of the broker, and that module names every private member of amqtt it
touches, so an amqtt upgrade is one file to read."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import amqtt

from broker import amqtt_adapter

BROKER = Path(amqtt_adapter.__file__).parent
AMQTT = Path(inspect.getfile(amqtt)).parent
DEPENDENCY = ("amqtt", "transitions")  # transitions: amqtt's session state machine


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_adapter_imports_amqtt() -> None:
    importing = sorted(path.name for path in BROKER.glob("*.py")
                       if path.name != "amqtt_adapter.py" and _imports(path) & set(DEPENDENCY))
    assert importing == []


def test_the_adapter_lists_every_private_member_of_amqtt_it_uses() -> None:
    amqtt_source = "\n".join(path.read_text() for path in AMQTT.rglob("*.py"))
    source = Path(amqtt_adapter.__file__).read_text()
    tree = ast.parse(source)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}  # read or called
    used |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    used = {name for name in used if name.startswith("_") and not name.startswith("__")}  # and overridden
    defined_by_amqtt = {name for name in used if f"def {name}(" in amqtt_source or f"self.{name} " in amqtt_source
                        or f"self.{name}:" in amqtt_source}
    documented = amqtt_adapter.__doc__ or ""
    assert defined_by_amqtt, "the scan found none: it would pass whatever the adapter does"
    assert sorted(name for name in defined_by_amqtt if f".{name}`" not in documented) == []
