"""The Consul ACL token Switchboard sends, and where it came from.

Every Consul client Switchboard makes (sbcore.state.store.consul_client, and through it the
CLI, the daemon, the Python API and the DNS proxy's health reads) takes its token from the
first of these that is set:

1. ``--token`` (the CLI), ``token=`` (the Python API);
2. ``SWITCHBOARD_TOKEN``;
3. the file named by ``SWITCHBOARD_TOKEN_FILE`` (it must be readable);
4. ``CONSUL_HTTP_TOKEN`` (what Consul's own tools read);
5. the file ``$SWITCHBOARD_STATE/token`` (``/var/lib/switchboard/token``), when it exists:
   the set-up scripts write it, mode 0600.

With none, requests carry no token (Consul's anonymous token). The source is kept so that
a refusal can say which token was refused and how to give another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHILD_SECRETS", "Token", "TokenError", "default_file", "give", "resolve",
           "without_secrets"]

CHILD_SECRETS = ("SWITCHBOARD_TOKEN", "SWITCHBOARD_TOKEN_FILE", "CONSUL_HTTP_TOKEN",
                 "CONSUL_HTTP_TOKEN_FILE")
HOW = ("give a token with Switchboard's policy through --token, SWITCHBOARD_TOKEN or a "
       "token file (SWITCHBOARD_TOKEN_FILE, or $SWITCHBOARD_STATE/token); see docs/security.md, "
       "Consul ACLs")


_given: str | None = None  # --token of this process's command line (switchboard.cli)


def give(secret: str | None) -> None:
    """Use ``secret`` for every client this process makes without a token of its own (the
    CLI's ``--token``; kept out of the environment that container commands inherit)."""
    global _given
    _given = secret or None


class TokenError(ValueError):
    """A token source was named but cannot be read."""


@dataclass(frozen=True)
class Token:
    """A token's secret (None: no token) and where it came from, in words."""

    secret: str | None
    source: str

    def __repr__(self) -> str:  # never the secret itself
        return f"Token(source={self.source!r})"


def default_file(environ: dict[str, str] | None = None) -> Path:
    """``$SWITCHBOARD_STATE/token`` (``/var/lib/switchboard/token``)."""
    env = os.environ if environ is None else environ
    return Path(env.get("SWITCHBOARD_STATE") or "/var/lib/switchboard") / "token"


def _read(path: Path, named_by: str) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise TokenError(f"cannot read the Consul token file {path} ({named_by}): "
                         f"{exc.strerror or exc}; {HOW}") from None
    if not secret:
        raise TokenError(f"the Consul token file {path} ({named_by}) is empty; {HOW}")
    return secret


def resolve(explicit: str | None = None, environ: dict[str, str] | None = None) -> Token:
    """The token to send, by the order in the module's docstring. TokenError when a named
    file cannot be read."""
    env = os.environ if environ is None else environ
    explicit = explicit or _given
    if explicit:
        return Token(explicit.strip(), "the token given (--token)")
    if env.get("SWITCHBOARD_TOKEN"):
        return Token(env["SWITCHBOARD_TOKEN"].strip(), "SWITCHBOARD_TOKEN")
    if env.get("SWITCHBOARD_TOKEN_FILE"):
        path = Path(env["SWITCHBOARD_TOKEN_FILE"])
        return Token(_read(path, "SWITCHBOARD_TOKEN_FILE"), f"the file {path}")
    if env.get("CONSUL_HTTP_TOKEN"):
        return Token(env["CONSUL_HTTP_TOKEN"].strip(), "CONSUL_HTTP_TOKEN")
    path = default_file(env)
    if path.exists():
        if not os.access(path, os.R_OK):
            return Token(None, f"no token ({path} is root's only)")
        return Token(_read(path, "the default token file"), f"the file {path}")
    return Token(None, "no token")


def without_secrets(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without the token variables: what container commands inherit."""
    return {k: v for k, v in environ.items() if k not in CHILD_SECRETS}
