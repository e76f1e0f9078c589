"""`--web.config.file`: the exporter-toolkit format, strict; bcrypt and its cache; watching.

Certificates come from trustme (a throwaway CA per test module, certificates on disk in tmp_path).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from exporter import cli, webconfig
from exporter.webconfig import BasicAuth, WebConfigError, WebConfigWatcher

COST = 4  # the lowest bcrypt cost: the tests check behaviour, not strength
PASSWORD = b"correct horse"


def hashed(password: bytes = PASSWORD) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(COST)).decode()


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(tmp_path: Path, ca: trustme.CA) -> Path:
    """A directory with cert.pem/key.pem (127.0.0.1), ca.pem, a stranger's key, junk, an
    encrypted key, and web.yml's future home."""
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("elsewhere.test").private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    (tmp_path / "junk.pem").write_text("not PEM at all\n")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    (tmp_path / "encrypted-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return tmp_path


def write(directory: Path, text: str, name: str = "web.yml") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


TLS = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"


# --------------------------------------------------------------------------- valid files


def test_a_full_file_gives_a_tls_context_and_users(pki: Path) -> None:
    alice, bob = hashed(), hashed(b"other")
    path = write(
        pki,
        TLS + "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
        "  min_version: TLS13\n"
        f"basic_auth_users:\n  alice: {alice}\n  bob: '{bob}'\n",
    )
    web = webconfig.load(path)
    assert web.tls is not None
    assert web.tls.verify_mode == ssl.CERT_REQUIRED
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.users == {"alice": alice.encode(), "bob": bob.encode()}
    assert web.describe() == (
        "TLS, client certificates RequireAndVerifyClientCert, basic auth for 2 users"
    )
    # every file it read is watched, the config itself included
    assert set(web.watched) == {path, *(str(pki / f) for f in ("cert.pem", "key.pem", "ca.pem"))}


@pytest.mark.parametrize(
    ("auth", "ca_line", "mode"),
    [
        ("NoClientCert", "", ssl.CERT_NONE),
        # Python cannot ask for a certificate without verifying it; the exporter never reads
        # an unverified one, so not asking admits the same clients as Go's RequestClientCert.
        ("RequestClientCert", "", ssl.CERT_NONE),
        ("VerifyClientCertIfGiven", "  client_ca_file: ca.pem\n", ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", "  client_ca_file: ca.pem\n", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_types(pki: Path, auth: str, ca_line: str, mode: ssl.VerifyMode) -> None:
    web = webconfig.load(write(pki, TLS + ca_line + f"  client_auth_type: {auth}\n"))
    assert web.tls is not None and web.tls.verify_mode == mode


def test_defaults_min_version_tls12_and_paths_relative_to_the_file(
    pki: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # relative to web.yml, not the cwd
    web = webconfig.load(write(pki, TLS))
    assert web.tls is not None and web.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert web.tls.verify_mode == ssl.CERT_NONE
    assert web.users == {}


def test_an_empty_file_is_plain_http_without_auth(tmp_path: Path) -> None:
    web = webconfig.load(write(tmp_path, ""))
    assert web.tls is None and not web.users
    assert web.describe() == "plain HTTP (no TLS), no basic auth"


def test_htpasswd_style_2y_hashes_are_accepted(tmp_path: Path) -> None:
    two_y = hashed().replace("$2b$", "$2y$", 1)  # what `htpasswd -B` writes
    web = webconfig.load(write(tmp_path, f"basic_auth_users:\n  alice: '{two_y}'\n"))
    assert BasicAuth().check(web.users, basic("alice", PASSWORD))


# --------------------------------------------------------------------------- invalid files

GOOD_HASH = "$2b$04$u9RjRsEU3R15KMcyIDi.5ed6Vz0293BUpBKZALSPG88YXw/kvvsbW"
WITH_CA = TLS + "  client_ca_file: ca.pem\n"
# (id, file text, what the one line must contain besides the file name and "fix:")
BAD: list[tuple[str, str, str]] = [
    ("bad-yaml", "tls_server_config:\n  cert_file: [\n", "invalid YAML"),
    ("top-level-list", "- tls_server_config\n", "top level must be a mapping"),
    ("unknown-top-key", "basic_auth_user: {}\n", "basic_auth_user: unknown key (did you mean"),
    ("unknown-tls-key", TLS + "  cert_fil: x\n", "tls_server_config.cert_fil: unknown key"),
    ("toolkit-only-key", "http_server_config: {http2: true}\n", "http_server_config: an exporter"),
    ("toolkit-only-tls-key", TLS + "  cipher_suites: []\n", "tls_server_config.cipher_suites"),
    ("tls-not-a-mapping", "tls_server_config: yes\n", "tls_server_config: must be a mapping"),
    ("empty-tls", "tls_server_config: {}\n", "cert_file and key_file are required"),
    ("cert-without-key", "tls_server_config: {cert_file: cert.pem}\n", "key_file: missing"),
    ("key-without-cert", "tls_server_config: {key_file: key.pem}\n", "cert_file: missing"),
    (
        "cert-missing",
        "tls_server_config: {cert_file: gone.pem, key_file: key.pem}\n",
        "cert_file: cannot read",
    ),
    (
        "key-missing",
        "tls_server_config: {cert_file: cert.pem, key_file: gone.pem}\n",
        "key_file: cannot read",
    ),
    (
        "cert-not-pem",
        "tls_server_config: {cert_file: junk.pem, key_file: key.pem}\n",
        "cert_file: ",
    ),
    (
        "key-not-pem",
        "tls_server_config: {cert_file: cert.pem, key_file: junk.pem}\n",
        "holds no PEM private key",
    ),
    (
        "key-not-the-certs",
        "tls_server_config: {cert_file: cert.pem, key_file: other-key.pem}\n",
        "does not belong to the certificate",
    ),
    (
        "key-encrypted",
        "tls_server_config: {cert_file: cert.pem, key_file: encrypted-key.pem}\n",
        "encrypted with a passphrase",
    ),
    (
        "client-auth-type-unknown",
        TLS + "  client_auth_type: RequireClientCert\n",
        "client_auth_type: input should be 'NoClientCert'",
    ),
    (
        "require-any-unsupported",
        TLS + "  client_auth_type: RequireAnyClientCert\n",
        "RequireAnyClientCert is not supported",
    ),
    ("ca-without-policy", WITH_CA, "client_ca_file: set, but client_auth_type NoClientCert"),
    (
        "verify-without-ca",
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "client_ca_file: required",
    ),
    (
        "ca-not-pem",
        TLS + "  client_ca_file: junk.pem\n  client_auth_type: VerifyClientCertIfGiven\n",
        "client_ca_file: ",
    ),
    ("min-version-unknown", TLS + "  min_version: TLS1.2\n", "min_version: input should be"),
    (
        "max-below-min",
        TLS + "  min_version: TLS13\n  max_version: TLS12\n",
        "max_version: TLS12 is below min_version TLS13",
    ),
    ("hash-is-a-password", "basic_auth_users:\n  alice: hunter2\n", "alice: not a bcrypt hash"),
    (
        "hash-cost-too-low",
        f"basic_auth_users:\n  alice: '{GOOD_HASH.replace('$04$', '$03$')}'\n",
        "alice: not a bcrypt hash",
    ),
    ("hash-not-a-string", "basic_auth_users:\n  alice: 12345\n", "basic_auth_users.alice: user"),
    ("users-not-a-mapping", "basic_auth_users: [alice]\n", "basic_auth_users: must be a mapping"),
    ("user-with-colon", f"basic_auth_users:\n  'a:b': '{GOOD_HASH}'\n", "without ':'"),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_each_bad_file_gives_one_clear_line(pki: Path, text: str, expected: str) -> None:
    path = write(pki, text)
    with pytest.raises(WebConfigError) as raised:
        webconfig.load(path)
    problems = raised.value.problems
    assert len(problems) == 1, problems
    line = problems[0]
    assert line.startswith(f"{path}: "), line
    assert expected in line, line
    assert "fix: " in line and "\n" not in line, line
    assert "hunter2" not in line and "12345" not in line  # a credential is never echoed


def test_a_missing_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError) as raised:
        webconfig.load(tmp_path / "absent.yml")
    (line,) = raised.value.problems
    assert line.startswith(
        f"{tmp_path / 'absent.yml'}: file not found; fix: pass --web.config.file"
    )


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(b"basic_auth_users: \xff\xfe\n")
    with pytest.raises(WebConfigError) as raised:
        webconfig.load(path)
    (line,) = raised.value.problems
    assert line.startswith(f"{path}: cannot read the file") and "fix: " in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),  # missing file
        ("tls_server_config: {cert_file: cert.pem}\n", "tls_server_config.key_file: missing"),
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice: not a bcrypt hash"),
    ],
    ids=["missing-file", "cert-without-key", "bad-hash"],
)
def test_the_exporter_exits_1_with_one_line_and_no_traceback(
    pki: Path, text: str, expected: str | None
) -> None:
    path = write(pki, text) if text else str(pki / "absent.yml")
    args = ["--demo", "--web.config.file", path, "--web.listen-address", "127.0.0.1:0"]
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.stderr
    assert expected is None or expected in lines[0]
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_config_check_validates_the_web_config_too(
    pki: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = write(pki, "parqex:\n  accounts:\n    - {name: home, token: t}\n", "config.yaml")
    good = write(pki, TLS + f"basic_auth_users:\n  alice: '{GOOD_HASH}'\n")
    assert cli.check_config(config_file, good) == 0
    assert f"{good}: OK (TLS, basic auth for 1 user)" in capsys.readouterr().out
    bad = write(pki, "tls_server_config: {cert_file: cert.pem}\n", "bad.yml")
    assert cli.check_config(config_file, bad) == 1
    assert capsys.readouterr().err.startswith(f"error: {bad}: tls_server_config.key_file")


# --------------------------------------------------------------------------- exporter-toolkit

# Files promtool (exporter-toolkit's own validator) and this exporter judge the same way.
AGREE: list[tuple[str, str, bool]] = [
    ("full", TLS + f"basic_auth_users:\n  alice: '{GOOD_HASH}'\n", True),
    ("empty", "", True),
    ("client-certs", WITH_CA + "  client_auth_type: RequireAndVerifyClientCert\n", True),
    ("tls13", TLS + "  min_version: TLS13\n", True),
    ("unknown-key", TLS + "  cert_fil: x\n", False),
    ("unknown-top-key", "basic_auth_user: {}\n", False),
    ("cert-without-key", "tls_server_config: {cert_file: cert.pem}\n", False),
    ("key-without-cert", "tls_server_config: {key_file: key.pem}\n", False),
    ("cert-missing", "tls_server_config: {cert_file: gone.pem, key_file: key.pem}\n", False),
    ("cert-not-pem", "tls_server_config: {cert_file: junk.pem, key_file: key.pem}\n", False),
    ("mismatch", "tls_server_config: {cert_file: cert.pem, key_file: other-key.pem}\n", False),
    ("client-auth-type", TLS + "  client_auth_type: Require\n", False),
    ("ca-without-policy", WITH_CA, False),
    ("min-version", TLS + "  min_version: TLS1.2\n", False),
    ("bad-hash", "basic_auth_users:\n  alice: hunter2\n", False),
    ("bad-yaml", "tls_server_config: [\n", False),
]
# Files promtool accepts and this exporter refuses, on purpose (docs/serving-securely.md).
STRICTER = [
    ("empty-tls", "tls_server_config: {}\n"),  # Go: silently plain HTTP
    ("verify-without-ca", TLS + "  client_auth_type: RequireAndVerifyClientCert\n"),  # Go: OS CAs
    ("max-below-min", TLS + "  min_version: TLS13\n  max_version: TLS12\n"),  # Go: fails later
    ("http2", "http_server_config: {http2: true}\n"),  # not implemented here
    ("require-any", TLS + "  client_auth_type: RequireAnyClientCert\n"),  # Python cannot
]


def promtool_accepts(path: str) -> bool:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/test installs Debian's prometheus package"
    result = subprocess.run(
        [promtool, "check", "web-config", path], capture_output=True, text=True, timeout=60
    )
    return result.returncode == 0


def accepts(path: str) -> bool:
    try:
        webconfig.load(path)
    except WebConfigError:
        return False
    return True


@pytest.mark.parametrize(("text", "valid"), [c[1:] for c in AGREE], ids=[c[0] for c in AGREE])
def test_agrees_with_promtool_check_web_config(pki: Path, text: str, valid: bool) -> None:
    path = write(pki, text)
    assert promtool_accepts(path) is valid
    assert accepts(path) is valid


@pytest.mark.parametrize("text", [c[1] for c in STRICTER], ids=[c[0] for c in STRICTER])
def test_stricter_than_promtool_where_documented(pki: Path, text: str) -> None:
    path = write(pki, text)
    assert promtool_accepts(path) and not accepts(path)


def test_the_documented_example_is_valid_here_and_for_promtool(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[1] / "docs" / "serving-securely.md").read_text()
    example = re.search(r"```yaml\n(# web-config.yml\n.*?)```", docs, re.DOTALL)
    assert example, "the web-config.yml example is gone from docs/serving-securely.md"
    (tmp_path / "tls").mkdir()
    leaf = trustme.CA().issue_cert("exporter.example.net")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "tls" / "exporter.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "tls" / "exporter.key"))
    path = write(tmp_path, example.group(1), "web-config.yml")
    assert promtool_accepts(path)
    web = webconfig.load(path)
    assert web.describe() == "TLS, basic auth for 1 user"
    assert BasicAuth().check(web.users, basic("prometheus", "example-only-change-me"))


# --------------------------------------------------------------------------- basic auth


@pytest.fixture
def users() -> dict[str, bytes]:
    return {"alice": hashed().encode(), "bob": hashed(b"bobs password").encode()}


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every bcrypt check the exporter runs, by the hash it checked against."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real(password, hashed_password)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", spy)
    return calls


def test_right_credentials_pass_and_wrong_ones_do_not(users: dict[str, bytes]) -> None:
    auth = BasicAuth()
    assert auth.check(users, basic("alice", PASSWORD))
    assert auth.check(users, basic("bob", "bobs password"))
    assert not auth.check(users, basic("alice", "bobs password"))
    assert not auth.check(users, basic("bob", PASSWORD))
    assert not auth.check(users, basic("carol", PASSWORD))
    assert not auth.check(users, basic("ALICE", PASSWORD))  # user names are case-sensitive


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"alice-without-colon").decode(),
        basic("alice", b"x" * 100),  # over bcrypt's 72 bytes: refused, no exception
        basic("alice", b"correct horse\x00"),
    ],
    ids=["none", "empty", "bearer", "no-credentials", "bad-base64", "no-colon", "long", "nul"],
)
def test_malformed_headers_are_refused(users: dict[str, bytes], header: str | None) -> None:
    assert not BasicAuth().check(users, header)


def test_the_scheme_is_case_insensitive(users: dict[str, bytes]) -> None:
    assert BasicAuth().check(users, basic("alice", PASSWORD).replace("Basic", "bAsIc"))


def test_a_success_is_cached_and_a_changed_hash_or_password_misses(
    users: dict[str, bytes], bcrypt_calls: list[bytes]
) -> None:
    auth = BasicAuth()
    for _ in range(5):
        assert auth.check(users, basic("alice", PASSWORD))
    assert len(bcrypt_calls) == 1  # one bcrypt for five scrapes
    rotated = {**users, "alice": hashed(b"new password").encode()}
    assert not auth.check(rotated, basic("alice", PASSWORD))  # the old password stops working
    assert auth.check(rotated, basic("alice", "new password"))
    assert len(bcrypt_calls) == 3
    assert not auth.check(users, basic("alice", "wrong"))  # another password: checked again
    assert len(bcrypt_calls) == 4
    assert auth.check(users, basic("alice", PASSWORD))  # the first success is still cached
    assert len(bcrypt_calls) == 4


def test_failures_are_cached_like_exporter_toolkit(
    users: dict[str, bytes], bcrypt_calls: list[bytes]
) -> None:
    # exporter-toolkit caches the outcome of (user, hash, password), failures included, so a
    # client repeating a wrong password costs one bcrypt, not one per request
    auth = BasicAuth()
    for _ in range(3):
        assert not auth.check(users, basic("alice", "wrong"))
    assert len(bcrypt_calls) == 1
    assert not auth.check(users, basic("mallory", "wrong"))  # unknown users too
    assert not auth.check(users, basic("mallory", "wrong"))
    assert len(bcrypt_calls) == 2
    assert auth.check(users, basic("alice", PASSWORD))  # and the right password still works


def test_a_removed_user_is_refused_even_when_cached(users: dict[str, bytes]) -> None:
    auth = BasicAuth()
    assert auth.check(users, basic("alice", PASSWORD))
    assert not auth.check({"bob": users["bob"]}, basic("alice", PASSWORD))


def test_the_cache_is_bounded(users: dict[str, bytes], bcrypt_calls: list[bytes]) -> None:
    auth = BasicAuth(cache_size=1)
    assert auth.check(users, basic("alice", PASSWORD))
    assert auth.check(users, basic("bob", "bobs password"))  # pushes alice out
    assert auth.check(users, basic("alice", PASSWORD))
    assert len(bcrypt_calls) == 3


def test_an_unknown_user_costs_one_bcrypt_like_a_known_one(
    users: dict[str, bytes], bcrypt_calls: list[bytes]
) -> None:
    assert not BasicAuth().check(users, basic("mallory", PASSWORD))
    # one check, against a configured hash (same cost), so timing does not reveal user names
    assert len(bcrypt_calls) == 1 and bcrypt_calls[0] in users.values()


def test_user_names_are_compared_in_constant_time(
    users: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = webconfig.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webconfig.hmac, "compare_digest", spy)
    assert BasicAuth().check(users, basic("alice", PASSWORD))
    # every configured name is compared, even after the first one matched, and as equal-length
    # digests, so neither the position nor the length of a name shows in the timing
    assert len(compared) == len(users)
    assert {len(a) for a, _ in compared} == {len(b) for _, b in compared} == {32}


def test_no_password_is_kept_in_the_cache(users: dict[str, bytes]) -> None:
    auth = BasicAuth()
    assert auth.check(users, basic("alice", PASSWORD))
    assert all(PASSWORD not in key and b"alice" not in key for key in auth._cache)


# --------------------------------------------------------------------------- watching


def watcher_for(pki: Path, text: str) -> tuple[WebConfigWatcher, Path]:
    path = pki / "web.yml"
    path.write_text(text)
    return WebConfigWatcher(path), path


def replace(path: Path, data: str | bytes) -> None:
    """Write a new version the way rotation tools do: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)


def test_a_changed_file_is_picked_up(pki: Path) -> None:
    watcher, path = watcher_for(pki, f"basic_auth_users:\n  alice: '{GOOD_HASH}'\n")
    first = watcher.current()
    assert watcher.current() is first  # nothing changed: the same object, nothing re-read
    replace(path, f"basic_auth_users:\n  bob: '{GOOD_HASH}'\n")
    assert set(watcher.current().users) == {"bob"}


def test_a_bad_new_version_is_logged_once_and_the_old_one_serves(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, path = watcher_for(pki, TLS + f"basic_auth_users:\n  alice: '{GOOD_HASH}'\n")
    good = watcher.current()
    replace(path, TLS + "  cert_fil: oops\n")
    with caplog.at_level(logging.ERROR, logger="exporter.webconfig"):
        for _ in range(5):
            assert watcher.current() is good
    assert len(caplog.records) == 1
    assert "tls_server_config.cert_fil: unknown key" in caplog.records[0].problem
    replace(path, TLS)  # fixed: picked up
    assert watcher.current() is not good and not watcher.current().users


def test_a_rotated_certificate_is_picked_up_without_a_config_change(
    pki: Path, ca: trustme.CA
) -> None:
    watcher, _ = watcher_for(pki, TLS)
    before = watcher.current()
    leaf = ca.issue_cert("127.0.0.1")
    replace(pki / "cert.pem", leaf.cert_chain_pems[0].bytes())
    replace(pki / "key.pem", leaf.private_key_pem.bytes())
    after = watcher.current()
    assert after is not before and after.tls is not None


def test_a_half_rotated_pair_keeps_the_old_one_until_the_key_arrives(
    pki: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, _ = watcher_for(pki, TLS)
    before = watcher.current()
    leaf = ca.issue_cert("127.0.0.1")
    replace(pki / "cert.pem", leaf.cert_chain_pems[0].bytes())
    with caplog.at_level(logging.ERROR, logger="exporter.webconfig"):
        assert watcher.current() is before  # the new certificate with the old key: refused
    assert "does not belong to the certificate" in caplog.records[0].problem
    replace(pki / "key.pem", leaf.private_key_pem.bytes())
    assert watcher.current() is not before


def test_a_file_named_by_a_failed_version_is_watched_until_it_appears(pki: Path) -> None:
    watcher, path = watcher_for(pki, TLS)
    before = watcher.current()
    replace(path, "tls_server_config: {cert_file: new-cert.pem, key_file: new-key.pem}\n")
    assert watcher.current() is before  # new-cert.pem does not exist yet
    shutil.copy(pki / "key.pem", pki / "new-key.pem")
    shutil.copy(pki / "cert.pem", pki / "new-cert.pem")
    assert watcher.current() is not before


@pytest.mark.parametrize(
    ("first", "second"),
    [(TLS, f"basic_auth_users:\n  alice: '{GOOD_HASH}'\n"), ("", TLS)],
    ids=["tls-removed", "tls-added"],
)
def test_switching_between_http_and_https_needs_a_restart(
    pki: Path, first: str, second: str, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, path = watcher_for(pki, first)
    before = watcher.current()
    replace(path, second)
    with caplog.at_level(logging.ERROR, logger="exporter.webconfig"):
        assert watcher.current() is before
        assert watcher.current() is before
    (record,) = caplog.records
    assert "needs a restart" in record.problem


def test_a_deleted_file_keeps_the_old_version(pki: Path) -> None:
    watcher, path = watcher_for(pki, TLS)
    before = watcher.current()
    path.unlink()
    assert watcher.current() is before


def test_current_is_cheap_when_nothing_changed(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    watcher, _ = watcher_for(pki, TLS)
    loads: list[str] = []
    original: Callable[[str], webconfig.WebConfig] = watcher._loader
    monkeypatch.setattr(watcher, "_loader", lambda p: loads.append(p) or original(p))
    for _ in range(100):
        watcher.current()
    assert loads == []


def test_an_unknown_key_is_shown_short_and_printable(pki: Path) -> None:
    """As in the config: the web config is re-read at run time, so its error goes to the log."""
    path = write(pki, f'? "{"k" * 100_000}\\e[2J"\n: 1\n')
    with pytest.raises(WebConfigError) as raised:
        webconfig.load(path)
    (line,) = raised.value.problems
    assert "unknown key" in line
    assert len(line) < len(path) + 300 and line.isprintable(), line[:300]
