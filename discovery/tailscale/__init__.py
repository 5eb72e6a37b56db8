"""The discovery node's view of the tailnet: the local daemon, the Tailscale API v2, and the farms on it."""
