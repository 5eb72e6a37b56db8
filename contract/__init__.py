"""The wire contract: topic names, payload models, the topic-to-model map and the REST response models.

Every component imports it; it imports nothing else of kubmesh.
"""
