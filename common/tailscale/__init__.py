"""The local Tailscale daemon (the tailscale CLI) and the shapes of what it and the API answer."""
