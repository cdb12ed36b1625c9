"""Integration tests that need real Open vSwitch and network namespaces; no Consul, no
daemon."""
