"""Every way a user can get config.yaml wrong gives one clear line naming file, key and fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import config
from tests.support import config_yaml

OK_ACCOUNT = "parqex:\n  accounts:\n    - {name: home, token: abc}\n"

OAUTH_OK = "client_id: cid, client_secret: cs, refresh_token_file: /nonexistent/dce-refresh"


def oauth_account(fields: str, extra: str = "") -> str:
    """One parqex account with `oauth2: {fields}` (and `extra` keys on the account)."""
    return f"parqex:\n  accounts:\n    - {{name: home{extra}, oauth2: {{{fields}}}}}\n"


# (case id, YAML, the one expected problem line after "test.yaml: ")
BAD_CONFIGS = [
    (
        "unknown-top-key",
        OK_ACCOUNT + "colection: {}\n",
        "colection: unknown key (did you mean 'collection'?); fix: remove it or correct it",
    ),
    (
        "unknown-account-key",
        "parqex:\n  accounts:\n    - {name: home, tokne: abc}\n",
        "parqex.accounts[0].tokne: unknown key (did you mean 'token'?); "
        "fix: remove it or correct it",
    ),
    (
        "unknown-collection-key",
        OK_ACCOUNT + "collection: {timeout: 3}\n",
        "collection.timeout: unknown key (did you mean 'timeout_seconds'?); "
        "fix: remove it or correct it",
    ),
    (
        "missing-name",
        "lametric:\n  accounts:\n    - {token: abc}\n",
        "lametric.accounts[0].name: required key is missing; fix: add it",
    ),
    (
        "no-credential",
        "parqex:\n  accounts:\n    - {name: home}\n",
        "parqex.accounts[0]: an account needs exactly one of token, token_file, oauth2; "
        "fix: add token: ${ENV_VAR}, token_file or oauth2",
    ),
    (
        "both-credentials",
        "parqex:\n  accounts:\n    - {name: home, token: a, token_file: /x}\n",
        "parqex.accounts[0]: an account needs exactly one of token, token_file, oauth2; "
        "fix: keep only one",
    ),
    (
        "empty-token",
        "parqex:\n  accounts:\n    - {name: home, token: '  '}\n",
        "parqex.accounts[0].token: token is empty; fix: set the token or use token_file",
    ),
    (
        "duplicate-account",
        "lametric:\n  accounts:\n    - {name: home, token: a}\n    - {name: home, token: b}\n",
        "lametric: account name 'home' is used twice; fix: make names unique",
    ),
    (
        "empty-name",
        "lametric:\n  accounts:\n    - {name: '', token: a}\n",
        "lametric.accounts[0].name: account name is empty; "
        "fix: give each account a short unique name",
    ),
    (
        "name-wrong-type",
        "lametric:\n  accounts:\n    - {name: 5, token: a}\n",
        "lametric.accounts[0].name: input should be a valid string (got 5); "
        "fix: give a string (quote it if YAML reads it as something else)",
    ),
    (
        "bad-url-scheme",
        "parqex:\n  base_url: ftp://example.invalid\n" + OK_ACCOUNT.removeprefix("parqex:\n"),
        "parqex.base_url: 'ftp://example.invalid' is not an http(s) URL; "
        "fix: write it like https://host[:port]",
    ),
    (
        "bad-url-no-host",
        "parqex:\n  base_url: 'https://'\n" + OK_ACCOUNT.removeprefix("parqex:\n"),
        "parqex.base_url: 'https://' is not an http(s) URL; fix: write it like https://host[:port]",
    ),
    (
        "bad-timezone",
        "parqex:\n  timezone: Mars/Olympus\n" + OK_ACCOUNT.removeprefix("parqex:\n"),
        "parqex.timezone: 'Mars/Olympus' is not an IANA time zone; "
        "fix: use a name like UTC or Europe/Berlin",
    ),
    (
        "timeout-not-number",
        OK_ACCOUNT + "collection: {timeout_seconds: soon}\n",
        "collection.timeout_seconds: input should be a valid number (got 'soon'); "
        "fix: give a number in the allowed range",
    ),
    (
        "timeout-zero",
        OK_ACCOUNT + "collection: {timeout_seconds: 0}\n",
        "collection.timeout_seconds: input should be greater than 0 (got 0); "
        "fix: give a number in the allowed range",
    ),
    (
        "accounts-not-list",
        "parqex:\n  accounts: {name: home, token: a}\n",
        "parqex.accounts: input should be a valid list (got {'name': 'home', 'token': 'a'}); "
        "fix: see the example config.yaml for the expected structure",
    ),
    (
        "source-not-mapping",
        "parqex: yes\n",
        "parqex: must be a mapping of keys; "
        "fix: see the example config.yaml for the expected structure",
    ),
    (
        "top-level-list",
        "- parqex\n",
        "the top level must be a mapping (parqex:, lametric:, ...)",
    ),
    (
        "bad-yaml",
        "parqex:\n  accounts: [\n",
        "line 3, column 1: invalid YAML (expected the node content, but found '<stream end>'); "
        "fix: check indentation and quoting there",
    ),
    (
        "unset-env-var",
        "parqex:\n  accounts:\n    - {name: home, token: '${DCE_TEST_UNSET_VAR}'}\n",
        "parqex.accounts[0].token: environment variable DCE_TEST_UNSET_VAR is not set; "
        "fix: export DCE_TEST_UNSET_VAR=... before starting, or use token_file",
    ),
    (
        "no-accounts",
        "parqex: {}\n",
        "no accounts configured; fix: add parqex.accounts or lametric.accounts "
        "(or run with --demo to try the exporter without one)",
    ),
    (
        "missing-token-file",
        "parqex:\n  accounts:\n    - {name: home, token_file: /nonexistent/dce-token}\n",
        # neither the path nor its directory exists: it may be a token, so it is not shown
        "parqex.accounts[0].token_file: no such file (the value is not shown: neither it nor "
        "its directory exists, so it may be a secret written under token_file by mistake); "
        "fix: give the path of the file that holds the access token, or put the access token "
        "itself under token: ${ENV_VAR}",
    ),
    (
        "oauth2-unknown-key",
        oauth_account(OAUTH_OK + ", token_uri: 'https://id.example/token'"),
        "parqex.accounts[0].oauth2.token_uri: unknown key (did you mean 'token_url'?); "
        "fix: remove it or correct it",
    ),
    (
        "oauth2-both-secrets",
        oauth_account(OAUTH_OK + ", client_secret_file: /run/secrets/cs"),
        "parqex.accounts[0].oauth2: needs exactly one of client_secret, client_secret_file; "
        "fix: keep only one",
    ),
    (
        "oauth2-no-secret",
        oauth_account("client_id: cid, refresh_token_file: /x"),
        "parqex.accounts[0].oauth2: needs exactly one of client_secret, client_secret_file; "
        "fix: add client_secret: ${ENV_VAR} or client_secret_file: PATH",
    ),
    (
        "oauth2-no-refresh-token-file",
        oauth_account("client_id: cid, client_secret: cs"),
        "parqex.accounts[0].oauth2.refresh_token_file: required key is missing; fix: add it",
    ),
    (
        "oauth2-no-client-id",
        oauth_account("client_secret: cs, refresh_token_file: /x"),
        "parqex.accounts[0].oauth2.client_id: required key is missing; fix: add it",
    ),
    (
        "oauth2-empty-client-id",
        oauth_account("client_id: '', client_secret: cs, refresh_token_file: /x"),
        "parqex.accounts[0].oauth2.client_id: client_id is empty; "
        "fix: copy it from the vendor's developer portal",
    ),
    (
        "oauth2-empty-client-secret",
        oauth_account("client_id: cid, client_secret: ' ', refresh_token_file: /x"),
        "parqex.accounts[0].oauth2.client_secret: client_secret is empty; "
        "fix: set it or use client_secret_file",
    ),
    (
        "oauth2-token-url-not-http",
        oauth_account(OAUTH_OK + ", token_url: 'ftp://id.example/token'"),
        "parqex.accounts[0].oauth2.token_url: token_url is not an http(s) URL; "
        "fix: write it like https://host/path/to/token "
        "or leave it out for the cloud's documented endpoint",
    ),
    (
        "oauth2-token-url-with-query",
        oauth_account(OAUTH_OK + ", token_url: 'https://id.example/token?client_secret=zz9'"),
        "parqex.accounts[0].oauth2.token_url: token_url has a query or fragment; "
        "fix: give only scheme, host and path (the exporter adds the parameters)",
    ),
    (
        "oauth2-token-url-with-password",
        oauth_account(OAUTH_OK + ", token_url: 'https://me:zz9@id.example/token'"),
        "parqex.accounts[0].oauth2.token_url: token_url contains a user or password; "
        "fix: remove it, use client_secret instead",
    ),
    (
        "oauth2-with-token",
        oauth_account(OAUTH_OK, extra=", token: abc"),
        "parqex.accounts[0]: an account needs exactly one of token, token_file, oauth2; "
        "fix: keep only one",
    ),
    (
        "oauth2-with-token-file",
        oauth_account(OAUTH_OK, extra=", token_file: /x"),
        "parqex.accounts[0]: an account needs exactly one of token, token_file, oauth2; "
        "fix: keep only one",
    ),
    (
        "oauth2-not-mapping",
        "parqex:\n  accounts:\n    - {name: home, oauth2: yes}\n",
        "parqex.accounts[0].oauth2: must be a mapping of keys; "
        "fix: see the example config.yaml for the expected structure",
    ),
    (
        "oauth2-missing-refresh-token-file",
        oauth_account(OAUTH_OK),
        "parqex.accounts[0].oauth2.refresh_token_file: no such file (the value is not shown: "
        "neither it nor its directory exists, so it may be a secret written under "
        "refresh_token_file by mistake); fix: give the path of the file that holds the "
        "refresh token",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_gives_one_clear_line(text: str, expected: str) -> None:
    os.environ.pop("DCE_TEST_UNSET_VAR", None)
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "test.yaml")
    assert caught.value.problems == [f"test.yaml: {expected}"]


def test_several_problems_are_all_reported() -> None:
    text = "parqex:\n  timezone: Nowhere\n  accounts:\n    - {name: a, tokne: x}\nbogus: 1\n"
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "c.yaml")
    assert len(caught.value.problems) == 3
    assert all(line.startswith("c.yaml: ") and "\n" not in line for line in caught.value.problems)


def test_env_vars_expand_and_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCE_TOKEN", "s3cret")
    loaded = config.parse(
        "parqex:\n  accounts:\n    - {name: home, token: 'Bearer-${DCE_TOKEN}'}\n", "t.yaml"
    )
    cfg = loaded.config
    account = cfg.parqex.accounts[0]
    assert account.token.get_secret_value() == "Bearer-s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.parqex.base_url == "https://api.parqex.com"
    assert cfg.parqex.timezone == "UTC"
    assert cfg.lametric is None
    assert cfg.base_url("lametric") == "https://developer.lametric.com"
    assert cfg.collection.timeout_seconds == 10.0
    assert cfg.collection.timeout_offset_seconds == 0.5


def test_token_file_is_checked_and_loose_permissions_warn(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    token.chmod(0o644)
    text = config_yaml(lametric=[{"name": "home", "token_file": token}], base_url="")
    loaded = config.parse(text, "t.yaml")
    assert loaded.warnings == [
        f"lametric.accounts[0].token_file: {token} is readable by others (mode 0644); "
        f"fix: chmod 600 {token}"
    ]
    token.chmod(0o600)
    assert config.parse(text, "t.yaml").warnings == []
    token.write_text("  \n")
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "t.yaml")
    assert caught.value.problems == [
        f"t.yaml: lametric.accounts[0].token_file: {token} is empty; "
        "fix: write the access token into it"
    ]


def oauth_files(tmp_path: Path) -> tuple[Path, Path]:
    refresh = tmp_path / "state" / "home.refresh"
    refresh.parent.mkdir()
    refresh.write_text("rt-abc\n")
    secret = tmp_path / "client.secret"
    secret.write_text("cs-abc\n")
    for path in (refresh, secret):
        path.chmod(0o600)
    return refresh, secret


def test_oauth2_account_loads_and_its_files_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh, secret = oauth_files(tmp_path)
    monkeypatch.setenv("DCE_CS", "zzclientsecretzz")
    text = (
        "lametric:\n  accounts:\n"
        f"    - {{name: a, oauth2: {{client_id: 12345, client_secret: '${{DCE_CS}}', "
        f"refresh_token_file: {refresh}}}}}\n"
        f"    - {{name: b, oauth2: {{client_id: cid, client_secret_file: {secret}, "
        f"refresh_token_file: {refresh}, token_url: 'http://127.0.0.1:8/t/'}}}}\n"
    )
    loaded = config.parse(text, "t.yaml")
    assert loaded.warnings == []
    first, second = loaded.config.lametric.accounts
    assert first.oauth2.client_id == "12345"  # YAML's number, meant as text
    assert first.oauth2.client_secret.get_secret_value() == "zzclientsecretzz"
    assert first.oauth2.token_url is None  # the source's documented endpoint, chosen later
    assert second.oauth2.client_secret_file == secret
    assert second.oauth2.token_url == "http://127.0.0.1:8/t/"  # kept as given, slash and all
    assert "zzclientsecretzz" not in repr(loaded.config)

    refresh.chmod(0o640)
    secret.chmod(0o604)
    assert config.parse(text, "t.yaml").warnings == [
        f"lametric.accounts[0].oauth2.refresh_token_file: {refresh} is readable by others "
        f"(mode 0640); fix: chmod 600 {refresh}",
        f"lametric.accounts[1].oauth2.client_secret_file: {secret} is readable by others "
        f"(mode 0604); fix: chmod 600 {secret}",
        f"lametric.accounts[1].oauth2.refresh_token_file: {refresh} is readable by others "
        f"(mode 0640); fix: chmod 600 {refresh}",
    ]

    refresh.write_text(" \n")
    secret.unlink()
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "t.yaml")
    assert caught.value.problems == [
        f"t.yaml: lametric.accounts[0].oauth2.refresh_token_file: {refresh} is empty; "
        "fix: write the refresh token into it",
        f"t.yaml: lametric.accounts[1].oauth2.client_secret_file: cannot read {secret} "
        "(No such file or directory); fix: create the file with the client secret, "
        "readable by the exporter's user",
        f"t.yaml: lametric.accounts[1].oauth2.refresh_token_file: {refresh} is empty; "
        "fix: write the refresh token into it",
    ]


def test_oauth2_refresh_token_directory_not_writable_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh, _ = oauth_files(tmp_path)
    text = oauth_account(f"client_id: c, client_secret: s, refresh_token_file: {refresh}")
    assert config.parse(text, "t.yaml").warnings == []
    real_access = os.access
    # as root, chmod cannot take write access away; ask os.access to say what a user would see
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode: False if Path(path) == refresh.parent else real_access(path, mode),
    )
    assert config.parse(text, "t.yaml").warnings == [
        f"parqex.accounts[0].oauth2.refresh_token_file: the exporter cannot write to "
        f"{refresh.parent}, so it cannot save a rotated refresh token and will fail at the "
        f"first refresh that rotates it; fix: make {refresh.parent} writable by the "
        "exporter's user"
    ]


def test_a_malformed_client_secret_is_never_echoed() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(
            oauth_account("client_id: c, client_secret: [hunter2], refresh_token_file: /x"),
            "t.yaml",
        )
    assert "hunter2" not in str(caught.value)
    assert "got a secret value" in str(caught.value)


def test_a_malformed_token_is_never_echoed() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse("parqex:\n  accounts:\n    - {name: a, token: [hunter2]}\n", "t.yaml")
    assert "hunter2" not in str(caught.value)
    assert "got a secret value" in str(caught.value)


def test_shipped_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARQEX_TOKEN", "x")
    monkeypatch.setenv("LAMETRIC_TOKEN", "y")
    cfg = config.load(Path(__file__).parent.parent / "config.yaml").config
    assert [source for source, _ in cfg.accounts()] == ["parqex", "lametric"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "error: {path}: file not found; fix: pass --config.file PATH or create {path}"),
        ("parqex: [\n", "error: {path}: line 2, column 1: invalid YAML"),
        ("parqex:\n  acounts: []\n", "error: {path}: parqex.acounts: unknown key"),
    ],
    ids=["missing-file", "bad-yaml", "unknown-key"],
)
@pytest.mark.parametrize("mode", [["--config.check"], []], ids=["check", "start"])
def test_cli_reports_user_errors_without_traceback(
    tmp_path: Path, content: str | None, expected: str, mode: list[str]
) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    result = run_cli(*mode, "--config.file", str(path), "--web.listen-address", "127.0.0.1:0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected.format(path=path))
    assert "Traceback" not in result.stderr


def test_config_check_prints_what_would_be_scraped(tmp_path: Path) -> None:
    token = tmp_path / "tok"
    token.write_text("t")
    token.chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(
        config_yaml(
            parqex=[{"name": "home", "token": "${DCE_T}"}],
            lametric=[{"name": "office", "token_file": token}],
            base_url="",
        )
    )
    result = run_cli("--config.check", "--config.file", str(path), env={"DCE_T": "zzsecretzz"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{path}: OK",
        "  parqex account 'home': https://api.parqex.com with token (from the config)",
        f"  lametric account 'office': https://developer.lametric.com with token_file {token}",
        "  collection: timeout 10s, offset 0.5s, max response 67108864 bytes",
    ]
    assert "zzsecretzz" not in result.stdout + result.stderr


def test_cli_rejects_a_bad_listen_address(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(OK_ACCOUNT)
    result = run_cli("--config.file", str(path), "--web.listen-address", "localhost")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --web.listen-address 'localhost': expected HOST:PORT such as :9862 or "
        "127.0.0.1:9862"
    )


@pytest.mark.parametrize(
    "address", ["[::1", "::1:9862", "[nope]:9862", "localhost", ":99999", "host:port"]
)
def test_cli_rejects_malformed_listen_addresses(tmp_path: Path, address: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(OK_ACCOUNT)
    result = run_cli("--config.file", str(path), "--web.listen-address", address)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --web.listen-address {address!r}: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_listen_address_forms() -> None:
    from exporter.server import parse_listen_address

    assert parse_listen_address(":9862") == ("", 9862)
    assert parse_listen_address("127.0.0.1:9862") == ("127.0.0.1", 9862)
    assert parse_listen_address("[::]:9862") == ("::", 9862)
    assert parse_listen_address("[::1]:0") == ("::1", 0)
    assert parse_listen_address("localhost:9862") == ("localhost", 9862)


def test_config_check_names_the_oauth2_refresh_token_file(tmp_path: Path) -> None:
    refresh = tmp_path / "refresh"
    refresh.write_text("r")
    refresh.chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(
        "lametric:\n  accounts:\n    - name: home\n      oauth2:\n"
        f"        {{client_id: c, client_secret: s3cret-value, refresh_token_file: {refresh}}}\n"
    )
    result = run_cli("--config.check", "--config.file", str(path))
    assert result.returncode == 0, result.stderr
    assert f"with oauth2 refresh_token_file {refresh}" in result.stdout
    assert "s3cret-value" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("address", "hint"),
    [
        # A URL, not HOST:PORT: the hint must say to drop the scheme, not blame IPv6.
        ("http://localhost:9862", "drop the scheme: write localhost:9862"),
        ("https://127.0.0.1:9862", "drop the scheme: write 127.0.0.1:9862"),
        # Five numbers are no IPv4 address: not a port someone else holds.
        ("1.2.3.4.5:80", "'1.2.3.4.5' is not an IPv4 address"),
        ("256.1.1.1:80", "'256.1.1.1' is not an IPv4 address"),
    ],
)
def test_listen_address_hints_name_the_actual_mistake(
    tmp_path: Path, address: str, hint: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(OK_ACCOUNT)
    result = run_cli("--config.file", str(path), "--web.listen-address", address)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: --web.listen-address {address!r}: {hint}")
    assert "IPv6" not in result.stderr and "free the port" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_address_this_host_does_not_have_is_not_called_a_busy_port(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(OK_ACCOUNT)
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is assigned to no host: binding it fails, sends nothing.
    result = run_cli("--config.file", str(path), "--web.listen-address", "192.0.2.1:9862")
    assert result.returncode == 1, result.stderr
    assert "free the port" not in result.stderr
    assert "no network interface of this host has the address 192.0.2.1" in result.stderr


def test_a_busy_port_is_called_one(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(OK_ACCOUNT)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "fix: free the port" in result.stderr


# -- credential values: trimmed, and refused with one line that never echoes them ---------------

CREDENTIAL_KEYS = [
    ("token", "parqex:\n  accounts:\n    - {name: home, token: '${DCE_TEST_CRED}'}\n"),
    (
        "oauth2.client_secret",
        oauth_account(
            "client_id: c, client_secret: '${DCE_TEST_CRED}', refresh_token_file: /nonexistent/x"
        ),
    ),
]


@pytest.mark.parametrize(("key", "text"), CREDENTIAL_KEYS, ids=[k for k, _ in CREDENTIAL_KEYS])
@pytest.mark.parametrize(
    "padded", ["tok-SENTINEL-4f2a\n", "  tok-SENTINEL-4f2a \r\n", "\ttok-SENTINEL-4f2a"]
)
def test_credential_values_lose_surrounding_whitespace(
    key: str, text: str, padded: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Kubernetes secret in ${VAR} often ends in a newline: it must not reach a header."""
    monkeypatch.setenv("DCE_TEST_CRED", padded)
    refresh = tmp_path / "refresh"
    refresh.write_text("rt")
    refresh.chmod(0o600)
    account = config.parse(
        text.replace("/nonexistent/x", str(refresh)), "t.yaml"
    ).config.parqex.accounts[0]
    holder = account.oauth2 if key.startswith("oauth2") else account
    assert getattr(holder, key.split(".")[-1]).get_secret_value() == "tok-SENTINEL-4f2a"


BAD_CREDENTIALS = {
    "inner-space": "tok-SENTINEL 4f2a",
    "inner-newline": "tok-SENTINEL\n4f2a",
    "tab": "tok-SENTINEL\t4f2a",
    "escape": "tok-SENTINEL\x1b4f2a",
    "nul": "tok-SENTINEL\x004f2a",
    "non-ascii": "tok-SENTINEL-4f2a\u00e9",
    "non-breaking-space": "tok-SENTINEL\u00a04f2a",
}


@pytest.mark.parametrize(("key", "text"), CREDENTIAL_KEYS, ids=[k for k, _ in CREDENTIAL_KEYS])
@pytest.mark.parametrize("value", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_a_credential_with_inner_whitespace_control_or_non_ascii_is_refused_unechoed(
    key: str, text: str, value: str
) -> None:
    # written as a YAML double-quoted scalar (JSON escapes), so NUL and friends can be given
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text.replace("'${DCE_TEST_CRED}'", json.dumps(value)), "t.yaml")
    [line] = caught.value.problems
    assert line.startswith(f"t.yaml: parqex.accounts[0].{key}: ")
    assert "whitespace, control or non-ASCII" in line and "; fix: " in line
    assert "\n" not in line
    for part in ("SENTINEL", "4f2a", "tok-"):
        assert part not in line


FILE_KEYS = [
    ("token_file", "access token", "{{name: home, token_file: {path}}}"),
    (
        "oauth2.client_secret_file",
        "client secret",
        "{{name: home, oauth2: {{client_id: c, client_secret_file: {path}, "
        "refresh_token_file: {ok}}}}}",
    ),
    (
        "oauth2.refresh_token_file",
        "refresh token",
        "{{name: home, oauth2: {{client_id: c, client_secret: cs-abc, "
        "refresh_token_file: {path}}}}}",
    ),
]


@pytest.mark.parametrize(("key", "what", "account"), FILE_KEYS, ids=[k for k, _, _ in FILE_KEYS])
@pytest.mark.parametrize(
    "content", ["tok-SENTINEL 4f2a\n", "tok-SENTINEL\n4f2a\n", "tok-SENTINEL\u00e94f2a"]
)
def test_a_credential_file_whose_value_cannot_be_sent_is_refused_unechoed(
    key: str, what: str, account: str, content: str, tmp_path: Path
) -> None:
    path, ok = tmp_path / "credential", tmp_path / "ok"
    path.write_text(content)
    ok.write_text("fine-value\n")
    for file in (path, ok):
        file.chmod(0o600)
    text = "parqex:\n  accounts:\n    - " + account.format(path=path, ok=ok) + "\n"
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "t.yaml")
    [line] = caught.value.problems
    assert line.startswith(f"t.yaml: parqex.accounts[0].{key}: the {what} in {path} has ")
    assert "whitespace, control or non-ASCII" in line and "; fix: " in line
    assert "SENTINEL" not in line and "4f2a" not in line


@pytest.mark.parametrize(
    "key",
    ["k" * 100_000, "\x1b[2J\x1b[31mred"],
    ids=["100000-characters", "terminal-escapes"],
)
def test_an_unknown_key_is_shown_short_and_printable(key: str) -> None:
    """An explicit YAML key (`? ...`) has no length limit: a 900 KB key was echoed whole in
    the one-line error (and on reload, in the log and the POST /-/reload answer); a key with
    ESC sequences reached the operator's terminal raw."""
    text = OK_ACCOUNT + f'? "{key.encode("unicode_escape").decode()}"\n: 1\n'
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "test.yaml")
    (line,) = caught.value.problems
    assert "unknown key" in line
    assert len(line) < 300 and line.isprintable(), line[:300]
