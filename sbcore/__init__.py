"""Switchboard's ground floor: the model, the pure planners and the state in Consul (see
docs/architecture.md)."""
