"""The simulated poultry house: plausible readings as a function of time, under the profile's value names.

Everything slow is a pure function of the clock (a day/night swing plus seeded smooth drift), so
the same seed and the same clock give the same house; only the small per-read sensor jitter
draws from the seeded generator as reads come in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

TEMP_TARGET = 24.0  # °C, the set point of a house with birds a few weeks old
VENT_START_ABOVE_TARGET = 1.0  # ventilation starts this far above the target
TUNNEL_ABOVE_VENT_START = 1.5  # and switches to tunnel ventilation this much hotter still
DAY_NIGHT_SWING = 2.5  # °C either side of the target, warmest at 15:00 local time
VENT_LAG_S = 30.0  # fans ramp up: the actual level follows its target this much later
MIN_VENTILATION = 10.0  # % kept even when cold, for air quality
FAN_GROUPS = 4  # regulated fan groups per scheme, one digital output each
LIGHTS_ON_HOUR, LIGHTS_OFF_HOUR = 6, 22
DAY_S = 86400.0
# standard deviation of each sensor's reading-to-reading noise: CO2 (NDIR) and static pressure (wind) are the
# restless ones
NOISE = {"temp_inside": 0.05, "humidity": 0.3, "co2": 35.0, "nh3": 0.2, "pressure": 0.7}


@dataclass(frozen=True)
class Drift:
    """Smooth wandering: a few sines with seeded periods and phases, so it neither jumps nor repeats soon."""

    terms: tuple[tuple[float, float, float], ...]  # (amplitude, period in seconds, phase)

    @classmethod
    def seeded(cls, rng: random.Random, amplitude: float, period_s: float) -> Drift:
        shares_and_periods = ((0.6, 1.0), (0.3, 0.37), (0.1, 0.13))
        return cls(tuple(
            (amplitude * share, period_s * ratio * rng.uniform(0.8, 1.25), rng.uniform(0, 2 * math.pi))
            for share, ratio in shares_and_periods
        ))

    def __call__(self, t: float) -> float:
        return sum(a * math.sin(2 * math.pi * t / period + phase) for a, period, phase in self.terms)


class Climate:
    """Inside temperature swinging around its target, ventilation following it, air quality following both."""

    def __init__(self, seed: int = 0, start_day: int = 1, started: float = 0.0) -> None:
        rng = random.Random(seed)
        self.start_day = start_day
        self.started = started
        # periods chosen so that the inside temperature moves by a tenth or two between polls 5 s apart
        self._temperature = Drift.seeded(rng, 1.0, 240)
        self._humidity = Drift.seeded(rng, 4.0, 900)
        self._co2 = Drift.seeded(rng, 200, 600)
        self._nh3 = Drift.seeded(rng, 1.0, 1200)
        self._pressure = Drift.seeded(rng, 1.0, 120)
        self._jitter = random.Random(rng.getrandbits(64))

    def values(self, now: float, utc_offset_min: int = 0) -> dict[str, float]:
        """Every modelled value at ``now`` (epoch seconds), local time being UTC + ``utc_offset_min``."""
        hour = (now / 3600 + utc_offset_min / 60) % 24
        inside = self._inside(now, hour) + self._noise("temp_inside")
        vent_start = TEMP_TARGET + VENT_START_ABOVE_TARGET
        tunnel = inside >= vent_start + TUNNEL_ABOVE_VENT_START
        target = _ventilation_for(inside - vent_start)
        level = _ventilation_for(self._inside(now - VENT_LAG_S, hour - VENT_LAG_S / 3600) - vent_start)
        fans_on = min(FAN_GROUPS, math.ceil(level / (100 / FAN_GROUPS)))
        fan_bits = (1 << fans_on) - 1
        air = level - 30  # ventilation above its usual level clears CO2 and NH3 and dries the air
        return {
            "temp_target": TEMP_TARGET,
            "temp_vent_activation": vent_start,
            "temp_inside": round(inside, 1),
            "ventilation_target": round(target),
            "ventilation_level": round(level),
            "ventilation_scheme": 1 if tunnel else 0,
            "fan_output_base": 0 if tunnel else round(level),
            "fan_output_tunnel": round(level) if tunnel else 0,
            "damper_output": round(min(100.0, 20 + 0.8 * level)),
            "humidity": _clamp(65 - 3 * _day_curve(hour) - 0.05 * air + self._humidity(now)
                               + self._noise("humidity"), 55, 75, 1),
            "co2": _clamp(1600 - 8 * air + self._co2(now) + self._noise("co2"), 800, 2500, 0),
            "nh3": _clamp(5 - 0.04 * air + self._nh3(now) + self._noise("nh3"), 1, 9, 1),
            "pressure": _clamp(12 + 0.16 * level + self._pressure(now) + self._noise("pressure"), 10, 30, 1),
            "day_counter": self.start_day + int((now - self.started) // DAY_S),
            # base fan groups in bits 0-3, tunnel fan groups in bits 4-7, the heater in bit 8
            "digital_outputs_1": (fan_bits << FAN_GROUPS if tunnel else fan_bits)
            | (1 << 8 if inside < TEMP_TARGET - 1 else 0),
            "digital_outputs_2": 1 if tunnel else 0,  # bit 0: tunnel curtain open
            "digital_outputs_3": 1 if LIGHTS_ON_HOUR <= hour < LIGHTS_OFF_HOUR else 0,  # bit 0: lighting
        }

    def unitemised(self, values: dict[str, float], now: float, count: int) -> list[int]:
        """Plausible small numbers for the registers documented only as "air inlets, lighting, timers"."""
        level = values["ventilation_level"]
        lit = bool(int(values["digital_outputs_3"]) & 1)
        inlets = [round(min(100.0, level * share)) for share in (1.0, 0.9, 0.9, 0.8)]  # inlet openings, %
        lighting = [80 if lit else 0, LIGHTS_ON_HOUR, LIGHTS_OFF_HOUR]  # intensity %, on and off hours
        timers = [int(now // 1) % period for period in (60, 120, 300, 600, 900, 1800)]  # cycle timers, s
        words = inlets + lighting + timers
        return (words + [0] * count)[:count]

    def _noise(self, name: str) -> float:
        return self._jitter.gauss(0, NOISE[name])

    def _inside(self, t: float, hour: float) -> float:
        return TEMP_TARGET + DAY_NIGHT_SWING * _day_curve(hour) + self._temperature(t)


def _day_curve(hour: float) -> float:
    """-1 at 03:00, +1 at 15:00 local time."""
    return math.sin(2 * math.pi * (hour - 9) / 24)


def _ventilation_for(excess: float) -> float:
    """Ventilation level, %, for the inside temperature's excess over the activation temperature."""
    return min(100.0, max(MIN_VENTILATION, MIN_VENTILATION + 30 * excess))


def _clamp(value: float, low: float, high: float, decimals: int) -> float:
    return round(min(high, max(low, value)), decimals)
