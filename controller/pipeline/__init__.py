"""The OpenFlow pipeline, compiled from host plans (pure): tables, matches, flows, and the trace
that explains them."""
