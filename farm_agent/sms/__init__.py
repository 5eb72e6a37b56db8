"""The farm's own last line: SMS through a GSM modem on the agent's machine when monitoring is cut off.

- :mod:`farm_agent.sms.policy` — when to text and what: pure logic over an injectable clock.
- :mod:`farm_agent.sms.texts` — the message in Russian or English.
- :mod:`farm_agent.sms.modem` — what the rest needs of a modem (:class:`~farm_agent.sms.modem.Modem`).
- :mod:`farm_agent.sms.gammu_modem` — the modem through python-gammu; the only module that imports it,
  and only imported when ``sms.device`` is set, so an agent without SMS does not load it.
- :mod:`farm_agent.sms.notifier` — runs the policy, sends through the modem, keeps the health.
"""
