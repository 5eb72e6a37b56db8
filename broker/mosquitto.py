"""``kubmesh broker export-mosquitto``: the identity store and the topic policy as Mosquitto files.

The password file holds each identity's ``$7$`` hash (``common/identities.py``
keeps one beside its own hash), so no secret is needed or re-issued. The ACL
file is rendered from :class:`broker.acl.AclRules`' grants, the same ones the
embedded broker evaluates:

- grants for a farm's own topics become ``pattern`` lines with ``%u``;
  Mosquitto applies patterns to every user, so each other non-admin user gets
  ``deny`` lines for the farm it would be by that pattern (Mosquitto checks
  denials first);
- a subscribe-only grant (Home Assistant's ``#``) is written as nothing: Mosquitto's
  ``acl_file`` grants every subscription and checks each delivery on ``read``, which
  is what that grant means;
- every other grant becomes a ``topic`` line in the user's section, and
  owner-scoped grants are written out once per farm of that owner, so the
  files must be exported again after ``kubmesh farm add`` (then ``kill -HUP``
  makes Mosquitto re-read both).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from broker.acl import AclRules, Binding, Grant, Right
from common.identities import Identity, IdentityStore, Role
from contract.topics import filter_within

PASSWORD_FILE = "mosquitto.passwd"
ACL_FILE = "mosquitto.acl"
SELF = "%u"


@dataclass(frozen=True)
class Export:
    password_file: Path
    acl_file: Path
    exported: list[str]
    skipped: list[str]  # identities without a Mosquitto hash: rotate them to include them


def password_lines(identities: list[Identity]) -> tuple[list[str], list[str]]:
    lines, skipped = [], []
    for identity in identities:
        if identity.mosquitto_hash:
            lines.append(f"{identity.username}:{identity.mosquitto_hash}")
        else:
            skipped.append(identity.username)
    return lines, skipped


def acl_lines(rules: AclRules, identities: list[Identity]) -> list[str]:
    farms_of: dict[str, list[str]] = {}
    for identity in identities:
        if identity.role is Role.FARM and identity.owner is not None:
            farms_of.setdefault(identity.owner, []).append(identity.username)
    own = _own_filters(rules)
    lines = ["# written by kubmesh broker export-mosquitto from the embedded broker's rules; do not edit", ""]
    lines += [f"pattern {right.value} {topic.replace('{farm}', SELF)}" for right, topic in own]
    for identity in identities:
        lines += ["", f"user {identity.username}"]
        if identity.role is not Role.FARM and identity.role is not Role.ADMIN:
            lines += [f"topic deny {topic}" for topic in _outermost(t.replace("{farm}", identity.username)
                                                                   for _, t in own)]
        lines += _merged(_user_rules(rules.grants(identity), farms_of.get(identity.owner or "", [])))
    return [*lines, ""]


def _own_filters(rules: AclRules) -> list[tuple[Right, str]]:
    """The grants that name the client's own farm: the same for every farm, so one pattern each."""
    farm = Identity(username="x", role=Role.FARM, secret_hash="")
    return [(grant.right, grant.filter) for grant in rules.grants(farm) if grant.binding is Binding.SELF]


def _user_rules(grants: tuple[Grant, ...], owned_farms: list[str]) -> list[tuple[Right, str]]:
    rules: list[tuple[Right, str]] = []
    for grant in grants:
        if grant.right is Right.SUBSCRIBE:
            continue  # Mosquitto's acl_file grants every SUBSCRIBE and checks deliveries: the same rule
        if grant.binding is Binding.NONE:
            rules.append((grant.right, grant.filter))
        elif grant.binding is Binding.OWNED:
            rules += [(grant.right, grant.for_farm(farm_id)) for farm_id in sorted(owned_farms)]
    return rules


def _merged(rules: list[tuple[Right, str]]) -> list[str]:
    """One line per topic: ``readwrite`` where a topic is both read and written."""
    rights: dict[str, set[Right]] = {}
    for right, topic in rules:
        rights.setdefault(topic, set()).add(right)
    return [f"topic {'readwrite' if len(r) == 2 else next(iter(r)).value} {topic}" for topic, r in rights.items()]


def _outermost(topics: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(topics))
    return [t for t in unique if not any(o != t and filter_within(t, o) for o in unique)]


def export_mosquitto(store: IdentityStore, rules: AclRules, directory: Path) -> Export:
    identities = store.all()
    passwords, skipped = password_lines(identities)
    exported = [i for i in identities if i.username not in skipped]
    directory.mkdir(parents=True, exist_ok=True)
    password_file, acl_file = directory / PASSWORD_FILE, directory / ACL_FILE
    _write(password_file, [*passwords, ""] if passwords else [])
    _write(acl_file, acl_lines(rules, exported))
    return Export(password_file, acl_file, [i.username for i in exported], skipped)


def _write(path: Path, lines: list[str]) -> None:
    """Replace ``path`` atomically, readable by its owner only (Mosquitto warns about wider modes)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines))
    os.replace(tmp, path)
