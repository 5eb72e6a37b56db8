"""Clearing what a removed farm left on the broker: its retained topics and its Home Assistant device.

An empty retained message deletes the retained one; on the device config topic
it also makes Home Assistant remove the device and all its entities.
"""

from __future__ import annotations

from common.mqtt import MqttUrl, async_client
from contract.topics import RETAINED, Topics, ha_device_config_topic

CLEAR_TIMEOUT_S = 5.0


def retained_topics(topics: Topics, ha_prefix: str, farm_id: str) -> list[str]:
    return [ha_device_config_topic(ha_prefix, farm_id), *sorted(topics.farm(farm_id, kind) for kind in RETAINED)]


async def clear_farm(url: MqttUrl, topics: Topics, ha_prefix: str, farm_id: str) -> list[str]:
    """Publish an empty retained message on each of the farm's retained topics; raises aiomqtt.MqttError."""
    cleared = retained_topics(topics, ha_prefix, farm_id)
    client = async_client(url, f"kubmesh-retire-{farm_id}")
    client.timeout = CLEAR_TIMEOUT_S
    async with client:
        for topic in cleared:
            await client.publish(topic, b"", qos=1, retain=True)
    return cleared

