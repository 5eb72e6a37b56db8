"""Who may connect: farms, services and people, kept in ``identities.json`` in the data dir.

Secrets are never stored. Machine tokens (farms, services) are long random
strings, stored as a salted SHA-256, so that a connect storm of thousands of
farms costs microseconds each. People's passwords are stored with scrypt, a
slow password hash. Each identity also keeps the hash an external Mosquitto
checks (PBKDF2-SHA512, ``$7$``, as ``mosquitto_passwd`` writes it: 101
iterations for machine tokens, whose 192 random bits need no stretching, and
210,000 for people's passwords), so that ``kubmesh broker export-mosquitto``
can write a password file without ever knowing a secret. API tokens for the
REST API belong to a user or service and are stored like machine tokens.
The file is replaced atomically and re-read when it
changes, so a running broker or web server sees additions and rotations
without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from contract.payloads import Timestamp, utc_now
from contract.topics import FARM_ID_PATTERN, check_farm_id

FILE_NAME = "identities.json"
USERNAME_PATTERN = FARM_ID_PATTERN
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MOSQUITTO_TOKEN_ITERATIONS = 101  # mosquitto_passwd's own default
MOSQUITTO_PASSWORD_ITERATIONS = 210_000
API_TOKEN_PREFIX = "kmt"


class Role(StrEnum):
    FARM = "farm"
    DISCOVERY = "discovery"
    MOBILE_WEB = "mobile_web"
    VIEWER = "viewer"
    OPERATOR = "operator"
    HOMEASSISTANT = "homeassistant"  # a Home Assistant's MQTT login: what HA does, no more
    ADMIN = "admin"

    @property
    def is_person(self) -> bool:
        return self in PERSON_ROLES


PERSON_ROLES = frozenset({Role.VIEWER, Role.OPERATOR, Role.HOMEASSISTANT, Role.ADMIN})
SERVICE_ROLES = frozenset({Role.DISCOVERY, Role.MOBILE_WEB})


class IdentityError(ValueError):
    """A request on the identity store that cannot be honoured (unknown name, duplicate, bad role)."""


class StoreError(RuntimeError):
    """The identities file exists but cannot be read; the message names the file and the reason."""


class Identity(BaseModel):
    username: str
    role: Role
    owner: str | None = None
    secret_hash: str
    mosquitto_hash: str | None = None  # absent for identities made before the Mosquitto export existed
    created: Timestamp = Field(default_factory=utc_now)

    @property
    def farm_id(self) -> str | None:
        return self.username if self.role is Role.FARM else None


class ApiToken(BaseModel):
    """A Bearer token of the REST API: ``kmt_{token_id}_{secret}``, acting for ``username``."""

    token_id: str
    username: str
    secret_hash: str
    created: Timestamp = Field(default_factory=utc_now)


class _File(BaseModel):
    version: int = 1
    identities: dict[str, Identity] = Field(default_factory=dict)
    api_tokens: dict[str, ApiToken] = Field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def as_dict(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def new_token() -> str:
    return secrets.token_hex(24)


def hash_token(token: str) -> str:
    salt = secrets.token_hex(16)
    digest = hmac.new(bytes.fromhex(salt), token.encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256${salt}${digest}"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def mosquitto_hash(secret: str, iterations: int) -> str:
    """The ``$7$`` PBKDF2-SHA512 hash of Mosquitto 2.0's password file (12-byte salt, base64)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of a token or password against its stored hash."""
    scheme, _, rest = stored.partition("$")
    try:
        if scheme == "hmac-sha256":
            salt, digest = rest.split("$")
            candidate = hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()
            return hmac.compare_digest(candidate, digest)
        if scheme == "scrypt":
            n, r, p, salt, digest = rest.split("$")
            candidate = hashlib.scrypt(
                secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p)
            ).hex()
            return hmac.compare_digest(candidate, digest)
    except ValueError:
        return False
    return False


class IdentityStore:
    """The identities file of one data dir; every read sees the newest version on disk."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._cache: _File = _File()
        self._cache_key: tuple[int, int] | None = None

    def _load(self) -> _File:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return _File()
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._cache_key:
            try:
                self._cache = _File.model_validate_json(self.path.read_bytes())
            except (ValidationError, ValueError) as exc:
                raise StoreError(f"{self.path}: not a valid identities file ({exc.__class__.__name__})") from None
            self._cache_key = key
        return self._cache

    def get(self, username: str) -> Identity | None:
        return self._load().identities.get(username)

    def all(self) -> list[Identity]:
        return sorted(self._load().identities.values(), key=lambda i: (i.role.value, i.username))

    def farm_owner(self, farm_id: str) -> str | None:
        identity = self.get(farm_id)
        return identity.owner if identity and identity.role is Role.FARM else None

    def owner_of(self, farm_id: str, declared: str | None) -> str | None:
        """Whose farm this is for access decisions: the owner given at ``kubmesh farm add`` when the farm
        has an identity here, else the owner its agent declares (farms on an external broker)."""
        identity = self.get(farm_id)
        return identity.owner if identity and identity.role is Role.FARM else declared

    def authenticate(self, username: str | None, secret: str | None) -> Identity | None:
        if not username or not secret:
            return None
        identity = self.get(username)
        if identity is None or not verify_secret(secret, identity.secret_hash):
            return None
        return identity

    @contextlib.contextmanager
    def _editing(self) -> Iterator[_File]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cache_key = None
            data = self._load().model_copy(deep=True)
            yield data
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(data.model_dump_json(indent=2))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            self._cache_key = None

    def add(self, username: str, role: Role, owner: str | None = None, password: str | None = None) -> Credentials:
        """Create an identity and return its secret, which is shown once and stored only as a hash."""
        check_username(username)
        secret = password or new_token()
        with self._editing() as data:
            if username in data.identities:
                raise IdentityError(f"{username!r} exists already")
            data.identities[username] = Identity(username=username, role=role, owner=owner, **_hashes(role, secret))
        return Credentials(username, secret)

    def add_many(self, entries: list[tuple[str, Role, str | None, str | None]]) -> list[Credentials]:
        """Create many identities (username, role, owner, password or None) in one rewrite of the file."""
        created = []
        with self._editing() as data:
            for username, role, owner, password in entries:
                check_username(username)
                if username in data.identities:
                    raise IdentityError(f"{username!r} exists already")
                secret = password or new_token()
                data.identities[username] = Identity(username=username, role=role, owner=owner,
                                                     **_hashes(role, secret))
                created.append(Credentials(username, secret))
        return created

    def rotate(self, username: str, password: str | None = None) -> Credentials:
        secret = password or new_token()
        with self._editing() as data:
            identity = data.identities.get(username)
            if identity is None:
                raise IdentityError(f"no identity {username!r}")
            for name, value in _hashes(identity.role, secret).items():
                setattr(identity, name, value)
        return Credentials(username, secret)

    def ensure(self, username: str, role: Role, owner: str | None = None) -> Credentials:
        """Give a service a fresh secret for this run, creating its identity if needed."""
        if self.get(username) is None:
            return self.add(username, role, owner)
        return self.rotate(username)

    def remove(self, username: str) -> Identity:
        """Remove an identity and every API token acting for it."""
        with self._editing() as data:
            identity = data.identities.pop(username, None)
            if identity is None:
                raise IdentityError(f"no identity {username!r}")
            data.api_tokens = {k: t for k, t in data.api_tokens.items() if t.username != username}
        return identity

    def add_api_token(self, username: str) -> str:
        """A new REST API token acting for a user or service; shown once, stored as a hash."""
        token_id, secret = secrets.token_hex(6), new_token()
        with self._editing() as data:
            identity = data.identities.get(username)
            if identity is None:
                raise IdentityError(f"no identity {username!r}")
            if identity.role is Role.FARM:
                raise IdentityError(f"{username!r} is a farm: farms use MQTT only")
            data.api_tokens[token_id] = ApiToken(token_id=token_id, username=username, secret_hash=hash_token(secret))
        return f"{API_TOKEN_PREFIX}_{token_id}_{secret}"

    def api_tokens(self) -> list[ApiToken]:
        return sorted(self._load().api_tokens.values(), key=lambda t: (t.username, t.created))

    def remove_api_token(self, token_id: str) -> ApiToken:
        with self._editing() as data:
            token = data.api_tokens.pop(token_id, None)
            if token is None:
                raise IdentityError(f"no API token {token_id!r}")
        return token

    def authenticate_api_token(self, token: str) -> Identity | None:
        """The identity a REST API token acts for, or None; the secret is compared in constant time."""
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        record = self._load().api_tokens.get(token_id) if prefix == API_TOKEN_PREFIX else None
        stored = record.secret_hash if record else _DUMMY_TOKEN_HASH  # same work for unknown ids
        if not verify_secret(secret, stored) or record is None:
            return None
        return self.get(record.username)


def check_username(username: str) -> str:
    try:
        return check_farm_id(username)
    except ValueError:
        raise IdentityError(
            f"invalid name {username!r}: use 1-64 characters a-z, 0-9, '_' or '-'"
        ) from None


def _hashes(role: Role, secret: str) -> dict[str, str]:
    if role.is_person:
        return {"secret_hash": hash_password(secret),
                "mosquitto_hash": mosquitto_hash(secret, MOSQUITTO_PASSWORD_ITERATIONS)}
    return {"secret_hash": hash_token(secret), "mosquitto_hash": mosquitto_hash(secret, MOSQUITTO_TOKEN_ITERATIONS)}


_DUMMY_TOKEN_HASH = hash_token(new_token())
