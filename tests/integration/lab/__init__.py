"""Integration tests that need a whole `switchboard lab`: several hosts, each with its own OVS,
Consul and daemon (marked `lab`)."""
