"""Modbus RTU at 9600 8N1 over a serial pair (socat ptys): the simulator on one end, the agent on the other."""

from __future__ import annotations

from pathlib import Path

from common.identities import Role
from tests.conftest import RunningBroker
from tests.farm_system import Agent
from tests.helpers import MqttWatcher, ServiceProcess, wait_until


def test_agent_polls_the_controller_over_rtu(broker: RunningBroker, tmp_path: Path,
                                             serial_pair: tuple[Path, Path]) -> None:
    device_end, agent_end = serial_pair
    simulator = ServiceProcess(["simulate", "--serial", str(device_end), "--baudrate", "9600", "--parity", "N",
                                "--stopbits", "1", "--sentinel", "co2=error"], tmp_path / "simulator.log")
    wait_until(lambda: "simulator" in simulator.output(), 10, what="simulator on the serial port")
    credentials = broker.add("farm-rtu", Role.FARM)
    agent = Agent(tmp_path, broker.data_dir, "farm-rtu", broker.url(credentials),
                  f"rtu://{agent_end}?baudrate=9600&parity=N&stopbits=1&unit=1").start()
    watcher = MqttWatcher(broker.port, broker.admin.username, broker.admin.password, "kub/farms/farm-rtu/#")
    try:
        state = wait_until(lambda: watcher.last("kub/farms/farm-rtu/state"), 15, what="a reading over RTU")
        assert isinstance(state["values"]["temp_inside"], float)
        assert state["values"]["co2"] is None and state["status"]["co2"] == "error"
        meta = wait_until(lambda: (m := watcher.last("kub/farms/farm-rtu/meta")) and m["device"].get("firmware")
                          and m, 10, what="firmware over RTU")
        assert meta["device"] == {"model": "KUB-1063", "firmware": "4.01", "unit": 1, "link": "rtu"}
    finally:
        watcher.close()
        agent.stop()
        simulator.stop()
