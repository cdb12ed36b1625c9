"""Integration tests that need a whole host: real ovs-vswitchd, a Consul agent, namespaces and a
Switchboard daemon (the session's, or one of the test's own)."""
