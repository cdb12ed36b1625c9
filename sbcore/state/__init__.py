"""The state in Consul: the desired state and reports in KV, events, the host inventory, tokens
and reaching Consul."""
