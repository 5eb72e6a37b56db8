"""Logging for every service: plain lines for people, or one JSON object per line for journald/Loki."""

from __future__ import annotations

import json
import logging
import sys

from contract.payloads import format_ts, utc_now


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": format_ts(utc_now()),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # amqtt is chatty at INFO; pymodbus repeats link faults the agent already reports once
    for noisy, floor in (("amqtt", logging.WARNING), ("transitions", logging.WARNING), ("pymodbus", logging.ERROR)):
        logging.getLogger(noisy).setLevel(max(floor, root.level))
