"""``kubmesh simulate``: a KUB-1063 as a real Modbus server (TCP, or RTU on a serial port).

Registers, scales and sentinels come from the device profile. Values drift plausibly: a
day/night swing of the inside temperature around its target, ventilation following the
temperature, humidity, CO2, NH3 and pressure moving with it (``climate``). Writing 1 to 0x0020
clears the latched alarm and warning groups, as the controller does (``device``).

For tests and demos it can refuse undocumented addresses (``--strict``), inject sensor
sentinels and alarm bits, delay or drop replies, and it offers a small HTTP control API
(``--control-port``, ``control_api``) to do the same while running.
"""

from farm_agent.simulator.control_api import create_control_api
from farm_agent.simulator.device import Kub1063Simulator, SimulatorError

__all__ = ["Kub1063Simulator", "SimulatorError", "create_control_api"]
