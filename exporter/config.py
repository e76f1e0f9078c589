"""Load and validate `config.yaml`.

Validation is pydantic's (strict, unknown keys are errors); this module only adds what pydantic
cannot know: `${VAR}` expansion from the environment, checks against the file system, and turning
every problem into one line that names the file, the key and the fix.
"""

from __future__ import annotations

import os
import re
import stat
import typing
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter import files, yamlsafe
from exporter.problems import (
    STRING_FIX,
    ProblemsError,
    flag_file_problem,
    in_file,
    os_reason,
    shown_key,
    unknown_key,
    value_at,
    yaml_problem,
)
from exporter.secret import credential_problem

SourceName = Literal["parqex", "lametric"]
SOURCES: tuple[SourceName, ...] = ("parqex", "lametric")
DEFAULT_BASE_URLS: dict[SourceName, str] = {
    "parqex": "https://api.parqex.com",
    "lametric": "https://developer.lametric.com",
}

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ProblemsError):
    """A config the exporter cannot run with; `problems` holds one user-facing line each."""


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL; fix: write it like https://host[:port]")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r} has a query or fragment; fix: give only scheme, host and path")
    return value.rstrip("/")


def _check_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone; fix: use a name like UTC or Europe/Berlin"
        ) from None
    return value


def _check_name(value: str) -> str:
    if not value.strip():
        raise ValueError("account name is empty; fix: give each account a short unique name")
    if not value.isprintable() or len(value) > 256:
        # it becomes the `account` label of every series: a control character or a lone
        # surrogate ("\ud83d" in YAML) would break every scrape
        raise ValueError(
            "account name has control characters, an invalid character or is longer than "
            "256; fix: give each account a short printable name"
        )
    return value


BaseUrl = Annotated[str, AfterValidator(_check_url)]
AccountName = Annotated[str, AfterValidator(_check_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_token_url(value: str) -> str:
    # Never echo the value: a query string here could hold a secret.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "token_url is not an http(s) URL; fix: write it like https://host/path/to/token "
            "or leave it out for the cloud's documented endpoint"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            "token_url has a query or fragment; fix: give only scheme, host and path "
            "(the exporter adds the parameters)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "token_url contains a user or password; fix: remove it, use client_secret instead"
        )
    return value


def _check_client_id(value: str) -> str:
    if not value.strip():
        raise ValueError("client_id is empty; fix: copy it from the vendor's developer portal")
    return value


def _credential(value: SecretStr | None, key: str, empty_fix: str) -> SecretStr | None:
    """`value` without surrounding whitespace (a `${VAR}` from a Kubernetes secret often ends
    in a newline), refused if what is left cannot travel in a header; never echoed."""
    if value is None:
        return None
    trimmed = value.get_secret_value().strip()
    problem = credential_problem(trimmed)
    if problem == "is empty":
        raise ValueError(f"{key} is empty; fix: {empty_fix}")
    if problem is not None:
        raise ValueError(
            f"{key} {problem}; fix: copy the value again without spaces, line breaks or "
            "other characters (a credential is printable ASCII)"
        )
    return SecretStr(trimmed)


def _path_from_str(value: Any) -> Any:
    # strict mode refuses str for Path; a YAML file can only give a str.
    return Path(value) if isinstance(value, str) else value


FilePath = Annotated[Path, BeforeValidator(_path_from_str)]


def _exactly_one(model: BaseModel, keys: tuple[str, ...], who: str, add: str) -> None:
    """Of `keys`, exactly one is set; otherwise one line that says which and how to fix it."""
    given = [key for key in keys if getattr(model, key) is not None]
    if len(given) != 1:
        raise ValueError(
            f"{who} exactly one of {', '.join(keys)}; fix: " + ("keep only one" if given else add)
        )


TokenUrl = Annotated[str, AfterValidator(_check_token_url)]
ClientId = Annotated[str, AfterValidator(_check_client_id)]


class OAuth2(_Strict):
    """The refresh-token grant; see docs/oauth2.md."""

    client_id: ClientId
    client_secret: SecretStr | None = None
    client_secret_file: FilePath | None = None
    refresh_token_file: FilePath
    token_url: TokenUrl | None = None  # None: the cloud's documented endpoint below base_url

    @field_validator("client_id", "client_secret", mode="before")
    @classmethod
    def _number_is_text(cls, value: Any) -> Any:
        # YAML reads an all-digit id or secret as a number; it is still meant as text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("client_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        return _credential(value, "client_secret", "set it or use client_secret_file")

    @model_validator(mode="after")
    def _one_secret(self) -> OAuth2:
        _exactly_one(
            self,
            ("client_secret", "client_secret_file"),
            "needs",
            "add client_secret: ${ENV_VAR} or client_secret_file: PATH",
        )
        return self


class Account(_Strict):
    """One cloud login; its `name` becomes the `account` label."""

    name: AccountName
    token: SecretStr | None = None
    token_file: FilePath | None = None
    oauth2: OAuth2 | None = None

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        return _credential(value, "token", "set the token or use token_file")

    @model_validator(mode="after")
    def _one_credential(self) -> Account:
        _exactly_one(
            self,
            ("token", "token_file", "oauth2"),
            "an account needs",
            "add token: ${ENV_VAR}, token_file or oauth2",
        )
        return self


class _Source(_Strict):
    accounts: list[Account] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> _Source:
        seen: set[str] = set()
        for account in self.accounts:
            if account.name in seen:
                raise ValueError(
                    f"account name {account.name!r} is used twice; fix: make names unique"
                )
            seen.add(account.name)
        return self


class ParqexConfig(_Source):
    base_url: BaseUrl = DEFAULT_BASE_URLS["parqex"]
    timezone: Annotated[str, AfterValidator(_check_zone)] = "UTC"


class LametricConfig(_Source):
    base_url: BaseUrl = DEFAULT_BASE_URLS["lametric"]


class CollectionConfig(_Strict):
    """How accounts are collected.

    `timeout_seconds` has three uses, all "the longest we wait for a cloud": the cap of the
    budget a scrape gives each account (exporter.scrape.pick_budget, which otherwise follows
    Prometheus's X-Prometheus-Scrape-Timeout-Seconds), the deadline of one upstream fetch as a
    whole, which may outlive the scrapes that gave up on it (Engine.fetch_deadline; a reload
    waits that long for fetches of the old engine), and the HTTP client's timeout for each
    connect, read, write and pool wait (exporter.clients.http.new_client).
    """

    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    timeout_offset_seconds: float = Field(default=0.5, ge=0, le=60)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    cache_seconds: float = Field(default=0.0, ge=0, le=3600)
    # False for multi-target setups: /metrics then has only the exporter's own metrics and each
    # account is scraped through /probe?target=<account>&source=<source>.
    metrics_include_accounts: bool = True
    backoff_base_seconds: float = Field(default=30.0, gt=0, le=3600)
    backoff_max_seconds: float = Field(default=900.0, gt=0, le=86400)

    @field_validator(
        "timeout_seconds",
        "timeout_offset_seconds",
        "cache_seconds",
        "backoff_base_seconds",
        "backoff_max_seconds",
        mode="before",
    )
    @classmethod
    def _int_is_float(cls, value: Any) -> Any:
        # strict mode would refuse `timeout_seconds: 10`; an int is a fine number of seconds.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Config(_Strict):
    parqex: ParqexConfig | None = None
    lametric: LametricConfig | None = None
    collection: CollectionConfig = Field(default_factory=CollectionConfig)

    def accounts(self) -> Iterable[tuple[SourceName, Account]]:
        for source in SOURCES:
            section: _Source | None = getattr(self, source)
            if section is not None:
                for account in section.accounts:
                    yield source, account

    def base_url(self, source: SourceName) -> str:
        section: _Source | None = getattr(self, source)
        return getattr(section, "base_url", DEFAULT_BASE_URLS[source])


@dataclass(frozen=True)
class Loaded:
    """A validated config with the non-fatal findings that go to the log at start-up."""

    config: Config
    warnings: list[str]


def load(path: str | os.PathLike[str], *, require_accounts: bool = True) -> Loaded:
    """Read, expand and validate the file at `path`; raise ConfigError with every problem."""
    name = str(path)
    try:
        text = files.read_text(path, limit=files.CONFIG_LIMIT)
    except files.FileProblem as problem:
        if problem.kind == "missing":
            line = f"{name}: file not found; fix: pass --config.file PATH or create {name}"
        else:
            line = flag_file_problem(problem, "--config.file")
        raise ConfigError([line]) from None
    return parse(text, name, require_accounts=require_accounts)


def parse(text: str, name: str = "config.yaml", *, require_accounts: bool = True) -> Loaded:
    """Validate config text; `name` is only used in messages."""
    try:
        raw = yamlsafe.load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: {yaml_problem(exc)}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{name}: the top level must be a mapping (parqex:, lametric:, ...)"])

    problems: list[str] = []
    raw = _expand_env(raw, (), name, problems)
    if problems:
        raise ConfigError(problems)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(in_file(name, _validation_lines(exc, raw))) from None

    problems, warnings = _check_files(config, name)
    if require_accounts and not any(True for _ in config.accounts()):
        problems.append(
            f"{name}: no accounts configured; fix: add parqex.accounts or lametric.accounts "
            "(or run with --demo to try the exporter without one)"
        )
    if problems:
        raise ConfigError(problems)
    return Loaded(config, warnings)


def _expand_env(node: Any, loc: tuple[Any, ...], name: str, problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _expand_env(v, (*loc, k), name, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, (*loc, i), name, problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def substitute(match: re.Match[str]) -> str:
            var = match.group(1)
            value = os.environ.get(var)
            if value is None:
                problems.append(
                    f"{name}: {_dotted(loc)}: environment variable {var} is not set; "
                    f"fix: export {var}=... before starting"
                    + (", or use token_file" if loc and loc[-1] == "token" else "")
                )
                return ""
            return value

        return _ENV_REF.sub(substitute, node)
    return node


def _check_files(config: Config, name: str) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    for source in SOURCES:
        section: _Source | None = getattr(config, source)
        for index, account in enumerate(section.accounts if section else ()):
            key = f"{source}.accounts[{index}]"
            if account.token_file is not None:
                _check_token_file(account.token_file, f"{key}.token_file", name, problems, warnings)
            oauth = account.oauth2
            if oauth is not None:
                if oauth.client_secret_file is not None:
                    _check_token_file(
                        oauth.client_secret_file,
                        f"{key}.oauth2.client_secret_file",
                        name,
                        problems,
                        warnings,
                        what="client secret",
                    )
                _check_token_file(
                    oauth.refresh_token_file,
                    f"{key}.oauth2.refresh_token_file",
                    name,
                    problems,
                    warnings,
                    what="refresh token",
                )
                _check_writable_dir(
                    oauth.refresh_token_file, f"{key}.oauth2.refresh_token_file", warnings
                )
    return problems, warnings


def _check_token_file(
    path: Path,
    key: str,
    name: str,
    problems: list[str],
    warnings: list[str],
    *,
    what: str = "access token",
) -> None:
    field = key.rsplit(".", 1)[-1]
    try:
        content = files.read_text(path, limit=files.SECRET_LIMIT)
        mode = path.stat().st_mode
    except OSError as exc:  # the file went away between the read and the stat
        problems.append(f"{name}: {key}: cannot read {path} ({os_reason(exc)})")
        return
    except files.FileProblem as problem:
        problems.append(f"{name}: {key}: {_file_problem(problem, path, field, what)}")
        return
    if not content.strip():
        problems.append(f"{name}: {key}: {path} is empty; fix: write the {what} into it")
    elif (unusable := credential_problem(content.strip())) is not None:
        problems.append(
            f"{name}: {key}: the {what} in {path} {unusable}; fix: write it again as one line "
            "of printable ASCII (a credential has no spaces or line breaks inside)"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            f"{key}: {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"fix: chmod 600 {path}"
        )


def _can_show(path: Path) -> bool:
    """Whether a file key's value may appear in a message: only when it is surely a path.

    A token pasted under token_file by mistake must not end up in a log. A value is shown when it
    exists, or when the directory it names exists and is neither / nor the working directory: a
    token is a random string, so it practically never names an existing directory. The cost: a
    path in a directory that does not exist either is not shown; the key still is.
    """
    text = str(path)
    if os.path.lexists(text):
        return True
    parent = os.path.dirname(text)
    return parent not in ("", "/") and os.path.isdir(parent)


def _file_problem(problem: files.FileProblem, path: Path, field: str, what: str) -> str:
    """A credential file's problem and its fix, naming the path only when `_can_show` it."""
    article = "an" if what[0] in "aeiou" else "a"
    if problem.kind == "type":
        return f"{problem}; fix: point {field} at a regular file that holds the {what}"
    if problem.kind == "size":
        return (
            f"{problem}, far more than {article} {what}; fix: point {field} at a file that "
            f"holds only the {what}"
        )
    if problem.kind == "encoding":
        return f"{problem}; fix: write the {what} into it as plain text"
    if _can_show(path):
        return f"{problem}; fix: create the file with the {what}, readable by the exporter's user"
    inline = {"token_file": "token", "client_secret_file": "client_secret"}.get(field)
    return (
        ("no such file" if problem.kind == "missing" else f"cannot read it ({problem.reason})")
        + " (the value is not shown: neither it nor its directory exists, so it may be a secret "
        f"written under {field} by mistake); fix: give the path of the file that holds the {what}"
        + (f", or put the {what} itself under {inline}: ${{ENV_VAR}}" if inline else "")
    )


def _check_writable_dir(path: Path, key: str, warnings: list[str]) -> None:
    """The refresh token is replaced by a rename in its directory: that needs write access."""
    directory = Path(os.path.realpath(path)).parent
    if not os.access(directory, os.W_OK | os.X_OK):
        warnings.append(
            f"{key}: the exporter cannot write to {directory}, so it cannot save a rotated "
            f"refresh token and will fail at the first refresh that rotates it; "
            f"fix: make {directory} writable by the exporter's user"
        )


def _validation_lines(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            lines.append(unknown_key(_dotted(loc), str(loc[-1]), _known_keys(loc)))
        elif kind == "missing":
            lines.append(f"{_dotted(loc)}: required key is missing; fix: add it")
        elif kind in ("model_type", "dict_type"):
            lines.append(f"{_dotted(loc)}: must be a mapping of keys; fix: {_type_fix(kind)}")
        elif kind == "value_error":
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{_dotted(loc) or 'top level'}: {message}")
        else:
            got = value_at(raw, loc, _Missing())
            lines.append(
                f"{_dotted(loc)}: {error['msg'].lower()}"
                + ("" if isinstance(got, _Missing) else f" (got {_describe(got, loc)})")
                + f"; fix: {_type_fix(kind)}"
            )
    return lines


def _known_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys of the model that holds the key at `loc`, or None when it cannot be told."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        annotation = model.model_fields.get(str(part))
        model = _model_in(annotation.annotation) if annotation else None
    return list(model.model_fields) if model is not None else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `list[Account]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class _Missing:
    pass


def _describe(value: Any, loc: tuple[Any, ...]) -> str:
    if loc and loc[-1] in ("token", "client_secret"):
        return "a secret value"  # never echo a credential, not even a malformed one
    if loc and loc[-1] in ("token_file", "client_secret_file", "refresh_token_file"):
        return "a value not shown, as it may be a secret"  # a token pasted in by mistake
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_fix(kind: str) -> str:
    if kind.startswith(("float", "int", "greater", "less")):
        return "give a number in the allowed range"
    if kind.startswith("string"):
        return STRING_FIX
    if kind.startswith(("list", "model", "dict")):
        return "see the example config.yaml for the expected structure"
    return "see the configuration reference in docs/configuration.md"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap"):
            continue
        else:
            key = shown_key(str(part))
            out += f".{key}" if out else key
    return out
