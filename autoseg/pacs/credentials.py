"""Credentials for a DICOMweb server: HTTP basic or a bearer token, never on the command line.

Where they come from, first match wins (:func:`resolve_credentials`):

1. ``--dicomweb-auth FILE``: its first line is ``Bearer TOKEN`` or ``user:password`` (the password may
   hold colons). A file that every user of the machine may read is refused, one that its group may
   read gives a warning (``chmod 600 FILE``).
2. ``$AUTOSEG_DICOMWEB_TOKEN``: a bearer token.
3. ``$AUTOSEG_DICOMWEB_USER`` and ``$AUTOSEG_DICOMWEB_PASSWORD``: HTTP basic (both or neither).

With none of them the requests go without credentials (``~/.netrc`` still applies, as in requests).
Errors never echo a secret; :class:`Credentials` keeps it out of its ``repr``.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from autoseg.errors import AutosegInputError

#: Bearer token (``Authorization: Bearer ...``).
TOKEN_VARIABLE = "AUTOSEG_DICOMWEB_TOKEN"
#: HTTP basic user name and password (both needed).
USER_VARIABLE = "AUTOSEG_DICOMWEB_USER"
PASSWORD_VARIABLE = "AUTOSEG_DICOMWEB_PASSWORD"


class BearerAuth(AuthBase):
    """``Authorization: Bearer TOKEN`` on each request (requests ships basic and digest auth only)."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BearerAuth) and other.token == self.token

    def __repr__(self) -> str:
        return "BearerAuth(***)"


@dataclass(frozen=True)
class Credentials:
    """One set of credentials: ``kind`` ``"basic"`` (``user`` + ``secret``) or ``"bearer"`` (``secret``), and
    where they came from (``source``, for the log)."""

    kind: str
    secret: str = field(repr=False)
    user: str = ""
    source: str = ""

    def auth(self) -> AuthBase:
        """The requests authentication handler."""
        return HTTPBasicAuth(self.user, self.secret) if self.kind == "basic" else BearerAuth(self.secret)

    def describe(self) -> str:
        """How the log names them (without the secret)."""
        what = f"HTTP basic auth as {self.user}" if self.kind == "basic" else "a bearer token"
        return f"{what} from {self.source}" if self.source else what


def _check_token(token: str, source: str) -> str:
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise AutosegInputError(f"{source}: the bearer token is empty or holds spaces or control characters")
    return token


def _check_basic(user: str, password: str, source: str) -> tuple[str, str]:
    if not user or ":" in user:
        raise AutosegInputError(f"{source}: the user name is empty or holds a colon")
    if not password:
        raise AutosegInputError(f"{source}: the password is empty")
    if any(not c.isprintable() for c in user + password):
        raise AutosegInputError(f"{source}: the user name or password holds control characters")
    return user, password


def parse_credentials(line: str, source: str) -> Credentials:
    """``Bearer TOKEN`` or ``user:password`` (surrounding white space ignored) as credentials; ``source`` names
    the file in errors, which never repeat the line."""
    line = line.strip()
    head, _, rest = line.partition(" ")
    if head.lower() == "bearer":
        return Credentials("bearer", _check_token(rest.strip(), source), source=source)
    if ":" in line:
        user, _, password = line.partition(":")
        user, password = _check_basic(user, password, source)
        return Credentials("basic", password, user, source)
    raise AutosegInputError(f"{source}: the first line is neither 'Bearer TOKEN' nor 'user:password'")


def permission_problem(path: Path) -> tuple[str | None, str | None]:
    """(refusal, warning) for a credentials file's permissions on POSIX: refused when every user may read
    it, a warning when its group may."""
    if os.name != "posix":
        return None, None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IROTH:
        return f"{path}: every user of this machine may read it (mode {mode:04o}); chmod 600 {path}", None
    if mode & stat.S_IRGRP:
        return None, f"warning: {path}: its group may read it (mode {mode:04o}); chmod 600 {path}"
    return None, None


def read_credentials_file(path: str | os.PathLike, warn: Callable[[str], None] | None = None) -> Credentials:
    """The credentials in the first line of ``path`` (:func:`parse_credentials`); refused or warned about as
    :func:`permission_problem` says (warnings go to ``warn``, default stderr)."""
    path = Path(path)
    try:
        refusal, warning = permission_problem(path)
        if refusal:
            raise AutosegInputError(f"--dicomweb-auth {refusal}")
        with path.open(encoding="utf-8") as handle:
            line = handle.readline()
    except FileNotFoundError:
        raise AutosegInputError(f"--dicomweb-auth {path}: not found") from None
    except UnicodeDecodeError:
        raise AutosegInputError(f"--dicomweb-auth {path}: not a UTF-8 text file") from None
    except OSError as error:
        raise AutosegInputError(f"--dicomweb-auth {path}: cannot be read ({error.strerror})") from None
    if warning:
        (warn or (lambda message: print(message, file=sys.stderr)))(warning)
    return parse_credentials(line, str(path))


def resolve_credentials(auth_file: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
                        warn: Callable[[str], None] | None = None) -> Credentials | None:
    """The credentials to use, in the order of the module docstring; None without any."""
    environ = os.environ if environ is None else environ
    if auth_file is not None:
        return read_credentials_file(auth_file, warn)
    token = environ.get(TOKEN_VARIABLE, "")
    if token:
        return Credentials("bearer", _check_token(token.strip(), f"${TOKEN_VARIABLE}"), source=f"${TOKEN_VARIABLE}")
    user, password = environ.get(USER_VARIABLE, ""), environ.get(PASSWORD_VARIABLE, "")
    if user or password:
        if not (user and password):
            given, missing = ((USER_VARIABLE, PASSWORD_VARIABLE) if user else (PASSWORD_VARIABLE, USER_VARIABLE))
            raise AutosegInputError(f"${given} is set but ${missing} is not; set both for HTTP basic auth")
        user, password = _check_basic(user, password, f"${USER_VARIABLE}/${PASSWORD_VARIABLE}")
        return Credentials("basic", password, user, f"${USER_VARIABLE}/${PASSWORD_VARIABLE}")
    return None


def session_for(credentials: Credentials | None) -> requests.Session:
    """A requests session that sends ``credentials`` (none: a plain session)."""
    from dicomweb_client.session_utils import create_session, create_session_from_auth

    return create_session() if credentials is None else create_session_from_auth(credentials.auth())
