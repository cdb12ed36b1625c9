"""Integration tests that need a real Consul agent (KV, catalog, DNS); no Open vSwitch, no
daemon."""
