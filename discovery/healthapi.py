"""A service's instances from Consul's health API, read once per DNS question.

``GET /v1/health/service/NAME?stale`` is what Consul's DNS interface answers from too (stale
reads, from the local server). It is asked at the moment of each question, so an instance
Consul registers, removes or marks critical is in the very next answer. The request goes
over a kept-alive connection per worker thread with plain ``http.client``: a third of the
time a full HTTP client takes. There are as many connections as the forwarder has workers
(8); there are no long polls, which Consul would count against its 200 connections per
client address until they time out.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from sbcore.state.store import DEFAULT_CONSUL
from sbcore.state.token import resolve as resolve_token

__all__ = ["HealthLookup", "consul_health"]

HealthLookup = Callable[[str, "str | None"], list[dict[str, Any]]]


def consul_health(address: str = DEFAULT_CONSUL, timeout: float = 2.0,
                  token: str | None = None) -> HealthLookup:
    """``lookup(service, datacenter)``: the service's ``/v1/health/service`` entries from the
    agent at ``address`` (``http://HOST:PORT``), asked with ACL token ``token`` (default: the
    one sbcore.state.token finds); OSError or HTTPException when it fails."""
    secret = token or resolve_token().secret
    headers = {"X-Consul-Token": secret} if secret else {}
    scheme, _, rest = address.partition("://")
    if not rest:
        scheme, rest = "http", address
    host, _, port = rest.partition(":")
    connection = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    local = threading.local()

    def get(path: str) -> list[dict[str, Any]]:
        for attempt in (1, 2):  # a kept-alive connection the agent closed: once more
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = connection(host, int(port or 8500), timeout=timeout)
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise OSError(f"Consul answered {response.status} for {path}: "
                              f"{body[:200].decode(errors='replace')}")
            return json.loads(body) or []
        raise AssertionError("unreachable")

    def lookup(service: str, datacenter: str | None) -> list[dict[str, Any]]:
        params = [("stale", "1")] + ([("dc", datacenter)] if datacenter else [])
        return get(f"/v1/health/service/{quote(service, safe='')}?{urlencode(params)}")

    return lookup
