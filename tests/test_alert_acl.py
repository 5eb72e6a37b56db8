"""The alerts topics: their decoding, and who may publish and read them. The discovery node publishes each farm's
open alerts, operators and admins acknowledge them, viewers (Home Assistant) read them, owners' scope holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.acl import Access, AclRules
from common.identities import Identity, Role
from contract.messages import MessageError, decode_message
from contract.topics import Topics

TOPICS = Topics()
RULES = AclRules(TOPICS)
OWNERS = {"farm-a": "owner-a", "farm-b": "owner-b"}


def person(role: Role, owner: str | None = None, name: str = "someone") -> Identity:
    return Identity(username=name, role=role, owner=owner, secret_hash="")


def allowed(identity: Identity, access: Access, topic: str) -> bool:
    return RULES.allowed(identity, access, topic, OWNERS.get)


def test_only_the_discovery_node_publishes_a_farms_alerts() -> None:
    topic = TOPICS.alerts("farm-a")
    assert allowed(person(Role.DISCOVERY, name="discovery"), Access.PUBLISH, topic)
    for role in (Role.FARM, Role.MOBILE_WEB, Role.VIEWER, Role.OPERATOR):
        assert not allowed(person(role, name="farm-a"), Access.PUBLISH, topic), role


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.MOBILE_WEB])
def test_people_and_the_web_read_alerts(role: Role) -> None:
    assert allowed(person(role), Access.SUBSCRIBE, TOPICS.alerts_filter())
    assert allowed(person(role), Access.RECEIVE, TOPICS.alerts("farm-b"))


def test_operators_admins_and_the_web_acknowledge_viewers_and_farms_do_not() -> None:
    topic = TOPICS.alerts_ack("farm-a")
    assert allowed(person(Role.OPERATOR), Access.PUBLISH, topic)
    assert allowed(person(Role.MOBILE_WEB, name="mobile_web"), Access.PUBLISH, topic)  # for its logged-in users
    assert allowed(person(Role.ADMIN), Access.PUBLISH, topic)
    assert not allowed(person(Role.VIEWER), Access.PUBLISH, topic)
    assert not allowed(person(Role.FARM, name="farm-a"), Access.PUBLISH, topic)


def test_an_owners_people_see_and_acknowledge_only_their_farms_alerts() -> None:
    operator, viewer = person(Role.OPERATOR, "owner-a"), person(Role.VIEWER, "owner-a")
    assert allowed(operator, Access.PUBLISH, TOPICS.alerts_ack("farm-a"))
    assert not allowed(operator, Access.PUBLISH, TOPICS.alerts_ack("farm-b"))
    assert allowed(viewer, Access.RECEIVE, TOPICS.alerts("farm-a"))
    assert not allowed(viewer, Access.RECEIVE, TOPICS.alerts("farm-b"))
    assert not allowed(viewer, Access.PUBLISH, TOPICS.alerts_ack("farm-a"))


ALERT_PAYLOADS = [b'{"by": "x"}', b'{"farm_id": "farm-a", "ts": "2026-01-01T00:00:00Z"}']


@given(st.sampled_from(["kub/alerts/farm-a/ack", "kub/alerts/farm-a", "kub/alerts/Bad/ack", "kub/alerts/x/y/z"]),
       st.binary(max_size=300) | st.sampled_from(ALERT_PAYLOADS))
def test_any_bytes_on_the_alerts_topics_decode_or_are_refused_as_a_message_error(topic: str, payload: bytes) -> None:
    try:
        decode_message(TOPICS, topic, payload)
    except MessageError as exc:
        assert exc.farm_id is None  # not a farm topic: no farm kind to name
