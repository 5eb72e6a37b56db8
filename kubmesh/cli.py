"""The ``kubmesh`` command: parses arguments and hands over to the package that does the work.

Each command module has ``register(subparsers)``, which adds its commands with a ``func(args) -> int``.
Registering imports nothing heavy: a command imports its component when it runs, so ``kubmesh farm-agent``
loads the agent and not the broker, the web or the discovery node.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from common.settings import ConfigError

Registrar = Callable[[argparse._SubParsersAction], None]


def _demo(subparsers: argparse._SubParsersAction) -> None:
    from kubmesh import demo

    demo.register(subparsers)


def _broker(subparsers: argparse._SubParsersAction) -> None:
    from broker import commands

    commands.register(subparsers)


def _discovery(subparsers: argparse._SubParsersAction) -> None:
    from discovery import commands

    commands.register(subparsers)


def _agent(subparsers: argparse._SubParsersAction) -> None:
    from farm_agent import commands

    commands.register(subparsers)


def _simulator(subparsers: argparse._SubParsersAction) -> None:
    from farm_agent.simulator import commands

    commands.register(subparsers)


def _web(subparsers: argparse._SubParsersAction) -> None:
    from mobile_web import commands

    commands.register(subparsers)


def _identities(subparsers: argparse._SubParsersAction) -> None:
    from kubmesh import identity_commands

    identity_commands.register(subparsers)


def _tailnet(subparsers: argparse._SubParsersAction) -> None:
    from discovery.tailscale import commands

    commands.register(subparsers)


def _notify(subparsers: argparse._SubParsersAction) -> None:
    from kubmesh import notify_commands

    notify_commands.register(subparsers)


def _doctor(subparsers: argparse._SubParsersAction) -> None:
    from kubmesh import doctor

    doctor.register(subparsers)


# In the order ``kubmesh --help`` lists them; each command is found by its first word, so only its own module
# (and what that imports) is loaded.
COMMANDS: dict[str, Registrar] = {
    "demo": _demo, "broker": _broker, "discovery": _discovery, "farm-agent": _agent, "simulate": _simulator,
    "mobile-web": _web, "farm": _identities, "user": _identities, "service": _identities, "token": _identities,
    "tailscale": _tailnet, "doctor": _doctor, "notify": _notify,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone, or of every command when it is None or unknown."""
    parser = argparse.ArgumentParser(prog="kubmesh", description="KUB-1063 farms over an MQTT mesh")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = COMMANDS.get(command or "")
    for register in [chosen] if chosen else dict.fromkeys(COMMANDS.values()):
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mobile-web"]:
        # gevent serves the web front end; its monkey patching must precede every socket/thread import
        from gevent import monkey

        monkey.patch_all()
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"kubmesh {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
