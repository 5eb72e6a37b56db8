"""What every component runs on: settings loading, logging, the service runtime, the MQTT session, identities."""
