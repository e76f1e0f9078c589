"""`--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit's file format.

The same file a Go exporter takes (https://prometheus.io/docs/prometheus/latest/configuration/
https/), restricted to what this exporter implements: `tls_server_config` (`cert_file`,
`key_file`, `client_ca_file`, `client_auth_type`, `min_version`, `max_version`) and
`basic_auth_users` (user name -> bcrypt hash). Unknown keys are errors, as in exporter-toolkit;
every problem becomes one line that names the file, the key and the fix.

Like exporter-toolkit, the file and the files it names are watched: `WebConfigWatcher.current()`
stats them (cheap) and re-reads them when one changed, so certificates and users rotate without a
restart. A new version that does not load is logged once and the previous one keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from exporter import files, problems, yamlsafe

log = logging.getLogger(__name__)

REALM = "device-cloud-exporter"
HASH_HELP = (
    "python3 -c 'import bcrypt, getpass; "
    "print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt()).decode())'"
)
# $2a$, $2b$ or $2y$, a two-digit cost from 04 to 31, then 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Keys exporter-toolkit knows that this exporter does not implement: a clearer message than
# "unknown key" for a file copied from a Go exporter.
_TOOLKIT_ONLY: dict[tuple[int | str, ...], set[str]] = {
    (): {"http_server_config", "rate_limit"},
    ("tls_server_config",): {
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "cipher_suites",
        "curve_preferences",
        "prefer_server_cipher_suites",
    },
}


class WebConfigError(problems.ProblemsError):
    """A web config the exporter cannot serve with; `problems` holds one user-facing line each.

    `watched` is what the failed attempt read (path -> stat signature), so a watcher knows when
    trying again can help: after the file or a file it names changes, or appears.
    """

    def __init__(self, problems: list[str], watched: Mapping[str, object] | None = None) -> None:
        super().__init__(problems)
        self.watched: Mapping[str, object] = watched or {}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _TLSServerConfig(_Strict):
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName | None = None


class _WebConfigFile(_Strict):
    tls_server_config: _TLSServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None


@dataclass(frozen=True, eq=False)
class WebConfig:
    """A loaded web config: the TLS context to serve with (None: plain HTTP) and the users."""

    path: str
    tls: ssl.SSLContext | None = None
    client_auth_type: str = "NoClientCert"
    users: Mapping[str, bytes] = field(default_factory=dict)  # user name -> bcrypt hash
    watched: Mapping[str, object] = field(default_factory=dict)  # path -> stat signature

    def describe(self) -> str:
        """One line for logs and `--config.check`."""
        parts = ["TLS" if self.tls else "plain HTTP (no TLS)"]
        if self.tls and self.client_auth_type != "NoClientCert":
            parts.append(f"client certificates {self.client_auth_type}")
        users = len(self.users)
        parts.append(
            f"basic auth for {users} user{'s' if users != 1 else ''}" if users else "no basic auth"
        )
        return ", ".join(parts)


# --------------------------------------------------------------------------- loading


def load(path: str | os.PathLike[str]) -> WebConfig:
    """Read and validate the web config at `path` and the files it names; build the TLS context.

    Raises WebConfigError with one line per problem. Relative paths inside the file are relative
    to the file's directory, as in exporter-toolkit.
    """
    name = str(path)
    watched: dict[str, object] = {}
    watched[name] = _stat(name)  # before reading: a change after this is seen by the watcher
    try:
        text = files.read_text(name, limit=files.CONFIG_LIMIT)
    except files.FileProblem as problem:
        line = (
            f"{name}: file not found; fix: pass --web.config.file the path of an existing "
            "file, or leave the flag out to serve plain HTTP without authentication"
            if problem.kind == "missing"
            else problems.flag_file_problem(problem, "--web.config.file")
        )
        raise WebConfigError([line], watched) from None
    return _parse(text, name, Path(name).parent, watched)


def parse(
    text: str, name: str = "web-config.yml", base_dir: str | os.PathLike[str] = "."
) -> WebConfig:
    """Validate web config text; `name` is only used in messages, `base_dir` for relative paths."""
    return _parse(text, name, Path(base_dir), {})


def _parse(text: str, name: str, base_dir: Path, watched: dict[str, object]) -> WebConfig:
    def fail(found: list[str]) -> WebConfigError:
        return WebConfigError(problems.in_file(name, found), watched)

    try:
        raw = yamlsafe.load(text)
    except yaml.YAMLError as exc:
        raise fail([problems.yaml_problem(exc)]) from None
    if raw is None:
        raw = {}  # an empty file: plain HTTP, no auth (as exporter-toolkit)
    if not isinstance(raw, dict):
        raise fail(
            [
                "the top level must be a mapping (tls_server_config:, basic_auth_users:); "
                "fix: see the example in docs/serving-securely.md"
            ]
        )
    try:
        model = _WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise fail(_validation_lines(exc, raw)) from None

    users, found = _check_users(model.basic_auth_users or {})
    if found:
        raise fail(found)
    tls, client_auth_type = None, "NoClientCert"
    if model.tls_server_config is not None:
        try:
            tls = _tls_context(model.tls_server_config, base_dir, watched)
        except _Problem as problem:
            raise fail([str(problem)]) from None
        client_auth_type = model.tls_server_config.client_auth_type
    return WebConfig(
        path=name,
        tls=tls,
        client_auth_type=client_auth_type,
        users=users,
        watched=dict(watched),
    )


def _check_users(raw: dict[str, str]) -> tuple[dict[str, bytes], list[str]]:
    users: dict[str, bytes] = {}
    found: list[str] = []
    for user, hashed in raw.items():
        key = f"basic_auth_users.{user}"
        if not user or ":" in user:
            found.append(
                f"{key}: a user name must be non-empty and without ':' (HTTP basic auth cannot "
                "send one); fix: rename the user"
            )
        elif not _BCRYPT.fullmatch(hashed.strip()):
            # never echo the value: it is a password hash, and sometimes a password by mistake
            found.append(
                f"{key}: not a bcrypt hash ($2b$ or $2y$, cost 04-31, 60 characters); fix: put "
                f"the hash of the password there, made with: {HASH_HELP}"
            )
        else:
            users[user] = hashed.strip().encode("ascii")
    return users, found


class _Problem(Exception):
    """One problem line (without the file name) that stops the load."""


def _tls_context(
    tls: _TLSServerConfig, base_dir: Path, watched: dict[str, object]
) -> ssl.SSLContext:
    key = "tls_server_config"
    auth = tls.client_auth_type
    if not tls.cert_file and not tls.key_file:
        raise _Problem(
            f"{key}: cert_file and key_file are required; fix: add both, or remove {key} to "
            "serve plain HTTP"
        )
    if not tls.key_file:
        raise _Problem(
            f"{key}.key_file: missing while cert_file is set; fix: add key_file: PATH of the "
            "certificate's private key (PEM)"
        )
    if not tls.cert_file:
        raise _Problem(
            f"{key}.cert_file: missing while key_file is set; fix: add cert_file: PATH of the "
            "server certificate (PEM)"
        )
    if auth == "RequireAnyClientCert":
        raise _Problem(
            f"{key}.client_auth_type: RequireAnyClientCert is not supported (Python's ssl module "
            "cannot accept a client certificate without verifying it); fix: use "
            "RequireAndVerifyClientCert with client_ca_file"
        )
    if tls.client_ca_file and auth in ("NoClientCert", "RequestClientCert"):
        raise _Problem(
            f"{key}.client_ca_file: set, but client_auth_type {auth} never checks client "
            "certificates against it; fix: set client_auth_type: RequireAndVerifyClientCert "
            "(or VerifyClientCertIfGiven), or remove client_ca_file"
        )
    if not tls.client_ca_file and auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        raise _Problem(
            f"{key}.client_ca_file: required by client_auth_type {auth}; fix: add "
            "client_ca_file: PATH of the CA certificate(s) that sign client certificates"
        )
    low = _TLS_VERSIONS[tls.min_version]
    high = _TLS_VERSIONS[tls.max_version] if tls.max_version else None
    if high is not None and high < low:
        raise _Problem(
            f"{key}.max_version: {tls.max_version} is below min_version {tls.min_version}; "
            "fix: raise max_version or remove it"
        )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS10 and TLS11 are deprecated
        context.minimum_version = low
        if high is not None:
            context.maximum_version = high

    cert = _resolve(base_dir, tls.cert_file)
    key_file = _resolve(base_dir, tls.key_file)
    # Each file is stat'ed before it is read, so a change after the read is seen by the watcher.
    watched[cert] = _stat(cert)
    _read_pem(
        f"{key}.cert_file",
        cert,
        lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert),
        "holds no PEM certificate; fix: point cert_file at the server certificate "
        "(-----BEGIN CERTIFICATE-----, intermediates after it)",
    )
    watched[key_file] = _stat(key_file)
    try:
        _read_pem(
            f"{key}.key_file",
            key_file,
            lambda: context.load_cert_chain(cert, key_file, password=_no_passphrase),
            "holds no PEM private key; fix: point key_file at the certificate's private key "
            "(-----BEGIN PRIVATE KEY-----)",
            mismatch=f"the key in {key_file} does not belong to the certificate in {cert}; fix: "
            "use the private key the certificate was issued for",
        )
    except _EncryptedKey:
        raise _Problem(
            f"{key}.key_file: {key_file} is encrypted with a passphrase; fix: store it "
            f"unencrypted (openssl pkey -in {key_file} -out NEW_FILE), readable only by the "
            "exporter's user"
        ) from None
    if tls.client_ca_file:
        ca = _resolve(base_dir, tls.client_ca_file)
        watched[ca] = _stat(ca)
        _read_pem(
            f"{key}.client_ca_file",
            ca,
            lambda: context.load_verify_locations(cafile=ca),
            "holds no PEM certificate; fix: point client_ca_file at the CA certificate(s) that "
            "sign client certificates",
        )
    context.verify_mode = {
        # Python cannot request a certificate without verifying it. The exporter never looks at
        # an unverified certificate, so not asking for one admits exactly the same clients.
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_NONE,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }[auth]
    return context


def _read_pem(
    key: str, path: str, load: Callable[[], None], not_pem: str, mismatch: str | None = None
) -> None:
    try:
        files.check(path, limit=files.PEM_LIMIT)  # OpenSSL would block on a FIFO
    except files.FileProblem as problem:
        if problem.kind in ("type", "size"):
            raise _Problem(f"{key}: {problem}; fix: point it at a regular PEM file") from None
        # a missing or unreadable file: OpenSSL's own error below says it as before
    try:
        load()
    except ssl.SSLError as exc:
        if mismatch and exc.reason == "KEY_VALUES_MISMATCH":
            raise _Problem(f"{key}: {mismatch}") from None
        raise _Problem(f"{key}: {path} {not_pem}") from None
    except OSError as exc:
        raise _Problem(
            f"{key}: cannot read {path} ({problems.os_reason(exc)}); fix: create it, readable "
            "by the exporter's user"
        ) from None


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    """Called by OpenSSL only for an encrypted key: refuse, instead of prompting on a terminal."""
    raise _EncryptedKey


def _resolve(base_dir: Path, path: str) -> str:
    return path if os.path.isabs(path) else str(base_dir / path)


def _stat(path: str) -> object:
    """What changes when a file is replaced or rewritten: device, inode, size, mtime, ctime."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return ("error", exc.errno)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _validation_lines(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        where = _dotted(loc) or "top level"
        kind = error["type"]
        if kind == "extra_forbidden":
            parent, leaf = loc[:-1], str(loc[-1])
            if leaf in _TOOLKIT_ONLY.get(parent, ()):
                lines.append(
                    f"{where}: an exporter-toolkit option device-cloud-exporter does not "
                    "implement; fix: remove it"
                )
            else:
                lines.append(problems.unknown_key(where, leaf, _known_keys(parent)))
        elif kind in ("model_type", "dict_type"):
            lines.append(
                f"{where}: must be a mapping of keys; fix: see the example in "
                "docs/serving-securely.md"
            )
        elif kind == "literal_error":
            got = problems.value_at(raw, loc)
            lines.append(
                f"{where}: {_uncapitalised(error['msg'])} (got {_short(got)}); fix: use one of "
                "those values (names are case-sensitive)"
            )
        elif loc and loc[0] == "basic_auth_users":
            lines.append(
                f"{where}: user names and hashes must be strings; fix: quote the value in YAML"
            )
        else:
            got = problems.value_at(raw, loc)
            lines.append(
                f"{where}: {_uncapitalised(error['msg'])} (got {_short(got)}); "
                f"fix: {problems.STRING_FIX}"
            )
    return lines


def _known_keys(parent: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = (
        _TLSServerConfig if parent == ("tls_server_config",) else _WebConfigFile
    )
    return list(model.model_fields)


def _uncapitalised(text: str) -> str:
    return text[:1].lower() + text[1:]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(problems.shown_key(str(part)) for part in loc)


# --------------------------------------------------------------------------- watching


class WebConfigWatcher:
    """The current web config; re-read when the file or a file it names has changed.

    `current()` is called for every new connection and every request: it stats a handful of
    files, and only re-reads them when a signature (device, inode, size, mtime, ctime) moved.
    """

    def __init__(self, path: str | os.PathLike[str], loader: Callable[[str], WebConfig] = load):
        self.path = str(path)
        self._loader = loader
        self._config = loader(self.path)  # WebConfigError here is a start-up error
        self._watched: Mapping[str, object] = self._config.watched
        self._lock = threading.Lock()

    def current(self) -> WebConfig:
        with self._lock:
            if any(_stat(path) != seen for path, seen in self._watched.items()):
                self._reload()
            return self._config

    def _reload(self) -> None:
        try:
            new = self._loader(self.path)
        except WebConfigError as exc:
            # Remember what this attempt read: it is retried only when one of those changes, so
            # one bad version is logged once, not once per request.
            self._watched = {**self._watched, **exc.watched}
            for problem in exc.problems:
                log.error(
                    "web config not reloaded; still serving the previous one",
                    extra={"problem": problem},
                )
            return
        if (new.tls is None) != (self._config.tls is None):
            self._watched = new.watched
            log.error(
                "web config not reloaded; still serving the previous one",
                extra={
                    "problem": f"{self.path}: tls_server_config was "
                    f"{'removed' if new.tls is None else 'added'}; fix: switching between HTTP "
                    "and HTTPS needs a restart"
                },
            )
            return
        self._config = new
        self._watched = new.watched
        log.info("web config reloaded", extra={"file": self.path, "serving": new.describe()})


# --------------------------------------------------------------------------- basic auth

# bcrypt of a random password nobody knows, for an unknown user when no user is configured.
_DUMMY_HASH = b"$2b$10$QA.z3wRcqy6YFh40uhIhKe85IoidxGUJKJM1dPCinuLjnXwBpL6Um"


class AuthBusy(Exception):
    """Too many password checks are waiting; `status` is what the client is answered."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Ticket:
    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False


class BcryptGate:
    """One bcrypt at a time, handed out round-robin between client addresses, with bounded queues.

    bcrypt is slow by design (tens of milliseconds), so a flood of distinct wrong passwords
    would make a correct one wait behind all of them. Here each client address waits in its own
    queue and the queues take turns: a flood from one address delays another address's login by
    one check per flooding address, not one per flooding request. A client with `per_client`
    checks waiting gets 429, and 503 once `total` checks wait, without running bcrypt at all.
    Each waiting check holds an HTTP worker: `total` is half the server's 32 workers, so
    cached logins, /metrics and everything else always have workers left.
    """

    def __init__(self, per_client: int = 4, total: int = 16) -> None:
        self.per_client = per_client
        self.total = total
        self._cond = threading.Condition()
        self._busy = False
        self._queues: OrderedDict[str, deque[_Ticket]] = OrderedDict()
        self._waiting = 0

    @contextlib.contextmanager
    def turn(self, client: str) -> Iterator[None]:
        with self._cond:
            if self._busy:
                waiting = self._queues.get(client)
                if waiting is not None and len(waiting) >= self.per_client:
                    raise AuthBusy(429, "too many password checks from this address; retry later")
                if self._waiting >= self.total:
                    raise AuthBusy(503, "too many password checks waiting; retry later")
                ticket = _Ticket()
                self._queues.setdefault(client, deque()).append(ticket)
                self._waiting += 1
                self._cond.wait_for(lambda: ticket.granted)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                if self._queues:  # the longest-waiting address gets the next turn
                    client, waiting = self._queues.popitem(last=False)
                    waiting.popleft().granted = True
                    self._waiting -= 1
                    if waiting:
                        self._queues[client] = waiting  # at the back of the line
                    self._cond.notify_all()
                else:
                    self._busy = False


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes, with a cache of outcomes.

    bcrypt is slow by design, and Prometheus sends the same credentials every scrape, so, as in
    exporter-toolkit (web/handler.go), the outcome of (user, hash, password) is remembered, a
    failure as well as a success, and bcrypt runs one at a time. The cache key is an HMAC (with a
    per-process random key) over the user, the hash and the password: a changed hash or password
    misses, and no password or fast hash of one is kept in memory. Failures have a cache of their
    own, so many wrong passwords cannot push a working one out. Checks that are not cached wait
    for bcrypt in a `BcryptGate`: a flood of distinct wrong passwords costs one CPU and delays
    another address's login by a few checks.
    """

    def __init__(self, cache_size: int = 256, gate: BcryptGate | None = None) -> None:
        self._cache: OrderedDict[bytes, None] = OrderedDict()  # successes
        self._failures: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._gate = gate or BcryptGate()

    def check(self, users: Mapping[str, bytes], header: str | None, client: str = "") -> bool:
        """Whether the header holds a configured user's password; AuthBusy when it cannot
        be checked now (too many checks waiting; see BcryptGate)."""
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = _find_user(users, user)
        known = hashed is not None
        if hashed is None:
            # An unknown user still costs one bcrypt at a configured user's cost (the result is
            # ignored), so response times do not tell which user names exist.
            hashed = next(iter(users.values()), _DUMMY_HASH)
        key = hmac.digest(
            self._cache_key,
            b"".join(len(part).to_bytes(4, "big") + part for part in (user, hashed, password)),
            "sha256",
        )
        cached = self._cached(key)
        if cached is not None:
            return cached and known
        with self._gate.turn(client):
            cached = self._cached(key)  # the same credentials may have been checked meanwhile
            ok = _checkpw(password, hashed) if cached is None else cached
        ok = ok and known
        with self._lock:
            cache = self._cache if ok else self._failures
            cache[key] = None
            while len(cache) > self._cache_size:
                cache.popitem(last=False)
        return ok

    def _cached(self, key: bytes) -> bool | None:
        with self._lock:
            for outcome, cache in ((True, self._cache), (False, self._failures)):
                if key in cache:
                    cache.move_to_end(key)
                    return outcome
        return None


def _find_user(users: Mapping[str, bytes], user: bytes) -> bytes | None:
    """The hash for `user`, comparing digests in constant time against every user name."""
    wanted = hashlib.sha256(user).digest()
    found = None
    for name, hashed in users.items():  # no early exit: the time does not depend on the match
        if hmac.compare_digest(hashlib.sha256(name.encode()).digest(), wanted):
            found = hashed
    return found


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt >= 5 refuses passwords over 72 bytes: no such password matches
        return False


def parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) from an `Authorization: Basic ...` value, or None if it is not one."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None
