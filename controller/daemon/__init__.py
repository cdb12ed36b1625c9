"""The per-host daemon (`switchboard controller`): the reconcile loop that drives plumbing, the
switch app, discovery and the reports."""
