"""Where Switchboard's Consul ACL token comes from, and what a refusal says."""

from __future__ import annotations

from pathlib import Path

import consul
import pytest

from sbcore.state import reach, store, token


@pytest.fixture(autouse=True)
def _no_given_token():
    token.give(None)
    yield
    token.give(None)


def test_the_first_source_set_wins_in_the_documented_order(tmp_path: Path):
    file = tmp_path / "t"
    file.write_text("from-file\n")
    env = {"SWITCHBOARD_TOKEN": "from-env", "SWITCHBOARD_TOKEN_FILE": str(file),
           "CONSUL_HTTP_TOKEN": "consul-env", "SWITCHBOARD_STATE": str(tmp_path)}
    assert token.resolve("given", env) == token.Token("given", "the token given (--token)")
    assert token.resolve(None, env).secret == "from-env"
    del env["SWITCHBOARD_TOKEN"]
    assert token.resolve(None, env) == token.Token("from-file", f"the file {file}")
    del env["SWITCHBOARD_TOKEN_FILE"]
    assert token.resolve(None, env) == token.Token("consul-env", "CONSUL_HTTP_TOKEN")
    del env["CONSUL_HTTP_TOKEN"]
    assert token.resolve(None, env) == token.Token(None, "no token")
    (tmp_path / "token").write_text("state-file")
    assert token.resolve(None, env) == token.Token("state-file", f"the file {tmp_path}/token")


def test_the_cli_token_is_used_by_clients_made_without_one(tmp_path: Path):
    token.give("cli-secret")
    env = {"SWITCHBOARD_TOKEN": "from-env"}
    assert token.resolve(None, env).secret == "cli-secret"


def test_a_named_token_file_that_cannot_be_read_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(token.TokenError) as caught:
        token.resolve(None, {"SWITCHBOARD_TOKEN_FILE": str(missing)})
    assert f"cannot read the Consul token file {missing} (SWITCHBOARD_TOKEN_FILE)" in str(
        caught.value)
    assert "--token" in str(caught.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(token.TokenError, match="is empty"):
        token.resolve(None, {"SWITCHBOARD_TOKEN_FILE": str(tmp_path / "empty")})


def test_the_client_sends_our_token_even_when_consul_http_token_differs(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "consul-env")
    monkeypatch.setenv("SWITCHBOARD_TOKEN", "ours")
    client = store.consul_client("http://127.0.0.1:1")
    assert client.prepare_headers() == {"X-Consul-Token": "ours"}
    assert client.token_source == "SWITCHBOARD_TOKEN"


def test_container_commands_do_not_inherit_the_token_variables():
    env = {"PATH": "/bin", "SWITCHBOARD_TOKEN": "s", "CONSUL_HTTP_TOKEN": "c",
           "SWITCHBOARD_TOKEN_FILE": "/f", "SWITCHBOARD_PREFIX": "p"}
    assert token.without_secrets(env) == {"PATH": "/bin", "SWITCHBOARD_PREFIX": "p"}


def test_a_refused_token_names_consul_its_source_and_what_to_do():
    line = reach.consul_refused("http://127.0.0.1:8500", consul.ACLPermissionDenied(
        "ACL not found"), "SWITCHBOARD_TOKEN")
    assert line.startswith("the Consul agent at http://127.0.0.1:8500 has ACLs on and it "
                           "refused Switchboard's token from SWITCHBOARD_TOKEN: ACL not found; "
                           "nothing was changed.")
    assert "--token, SWITCHBOARD_TOKEN or a token file" in line
    missing = reach.consul_refused("http://a:1", consul.ACLPermissionDenied("Permission denied"))
    assert "Switchboard sent no token: Permission denied" in missing


def test_the_secret_is_not_in_the_repr():
    assert "s3cret" not in repr(token.Token("s3cret", "SWITCHBOARD_TOKEN"))
