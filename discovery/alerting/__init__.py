"""Alerting: the discovery node stands guard over every farm and tells people, until someone answers.

Conditions come from the farms' typed messages (:mod:`.conditions`, :mod:`.rules`); the lifecycle of an
alert is pure logic with an injected clock (:mod:`.engine`); its state lives in SQLite (:mod:`.store`);
who is told and how is :mod:`.recipients`, :mod:`.compose`, :mod:`.channels` and :mod:`.webpush`;
:mod:`.service` ties them together and :mod:`.api` serves them over REST.
"""
