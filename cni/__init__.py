"""The CNI plugin ``switchboard-cni``: container runtimes (Podman, containerd, Kubernetes)
attach their containers to a Switchboard topology's network through the CNI protocol.

:mod:`cni.protocol` reads requests and writes results (pure), :mod:`cni.attachments` keeps
attachments in the desired state, :mod:`cni.main` is the executable.
"""
