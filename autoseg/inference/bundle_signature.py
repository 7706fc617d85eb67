"""Signed model bundles: Ed25519 signatures of a bundle's manifest, made and checked.

A bundle's ``manifest.json`` holds the SHA-256 of every member, so it detects damage; whoever
can rewrite the bundle can rewrite the manifest too, so it does not detect tampering. A
signature does: ``autoseg export ... --sign-key PRIVATE.pem`` adds ``signature.json``, an
Ed25519 signature of the exact bytes of ``manifest.json`` (which names and hashes every other
member) by the key pair ``autoseg keygen`` writes.

Opening a bundle with trusted public keys (``--trust-key PUBLIC.pem`` on predict and serve, or
the environment variable ``AUTOSEG_TRUSTED_KEYS``: files or folders of public keys, separated
by ``os.pathsep``) refuses a bundle that is unsigned, signed by another key, or whose signature
does not verify; a work folder (which cannot be signed) is refused too. Without trusted keys
a bundle opens as before, on its checksums alone (a signature is then not checked).

Keys are PEM files (``-----BEGIN PRIVATE KEY-----`` PKCS#8 / ``-----BEGIN PUBLIC KEY-----``, as
``openssl genpkey -algorithm ed25519`` writes them); a public key may also be an OpenSSH
``ssh-ed25519 ...`` line. Needs the ``cryptography`` package: ``pip install 'autoseg[sign]'``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegInputError
from autoseg.utils.files import atomic_path

#: The bundle member holding the signature (beside ``manifest.json``).
SIGNATURE = "signature.json"
SIGNATURE_FORMAT = "autoseg-signature"
SIGNATURE_ALGORITHM = "ed25519"
#: What installs the signing library.
SIGN_EXTRA = "pip install 'autoseg[sign]'"
#: Environment variable naming trusted public keys: files or folders, separated by os.pathsep.
TRUSTED_KEYS_ENV = "AUTOSEG_TRUSTED_KEYS"
#: Public key files in a folder of trusted keys.
PUBLIC_KEY_ENDINGS = (".pem", ".pub")
#: A key file is a few hundred bytes; anything past this is not one (read no further).
MAX_KEY_FILE_BYTES = 64 * 2**10
#: ``signature.json`` is about 300 bytes.
MAX_SIGNATURE_BYTES = 4 * 2**10
#: Default file names of ``autoseg keygen``.
DEFAULT_KEY_NAME = "autoseg-signing"


def _crypto() -> Any:
    """The ``cryptography`` modules signing needs, or a one-line error naming the extra."""
    try:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise AutosegInputError(f"signed bundles need the 'cryptography' package: {SIGN_EXTRA}") from None

    crypto = types.SimpleNamespace()
    crypto.InvalidSignature, crypto.UnsupportedAlgorithm = InvalidSignature, UnsupportedAlgorithm
    crypto.serialization, crypto.ed25519 = serialization, ed25519
    return crypto


def key_id(public_key: Any) -> str:
    """A short name of an Ed25519 public key: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    serialization = _crypto().serialization
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path: Path) -> bytes:
    if not path.is_file():
        raise AutosegInputError(f"{path}: key file not found")
    if path.stat().st_size > MAX_KEY_FILE_BYTES:
        raise AutosegInputError(f"{path}: not a key file (over {MAX_KEY_FILE_BYTES // 1024} kB)")
    return path.read_bytes()


def generate_key_pair(folder: str | os.PathLike, name: str = DEFAULT_KEY_NAME) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as ``{folder}/{name}.pem`` (private, mode 0600: keep it secret) and
    ``{folder}/{name}.pub.pem`` (public: give it to whoever opens the bundles); never overwrites."""
    crypto = _crypto()
    serialization = crypto.serialization
    folder = Path(folder)
    private_path, public_path = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise AutosegInputError(f"{path}: exists; choose another folder or --name (keys are never overwritten)")
    private = crypto.ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    with atomic_path(private_path) as temporary:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private_pem)
    with atomic_path(public_path) as temporary:
        temporary.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: str | os.PathLike) -> Any:
    """The Ed25519 private key of a PEM file; one-line errors naming the file."""
    crypto = _crypto()
    path = Path(path)
    data = _read_key_file(path)
    try:
        key = crypto.serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise AutosegInputError(f"{path}: the private key is encrypted; autoseg signs with unencrypted keys "
                                "(keep the file readable by you only)") from None
    except ValueError:
        raise AutosegInputError(f"{path}: not a PEM private key (write one with `autoseg keygen -o DIR`)") from None
    if not isinstance(key, crypto.ed25519.Ed25519PrivateKey):
        raise AutosegInputError(f"{path}: not an Ed25519 key ({type(key).__name__}); write one with "
                                "`autoseg keygen -o DIR`")
    return key


def load_public_key(path: str | os.PathLike) -> Any:
    """The Ed25519 public key of a PEM (or OpenSSH ``ssh-ed25519``) file; refuses private keys."""
    crypto = _crypto()
    path = Path(path)
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        raise AutosegInputError(f"{path}: is a private key; trust the public one ({DEFAULT_KEY_NAME}.pub.pem), "
                                "and never hand out the private key")
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = crypto.serialization.load_ssh_public_key(data.strip())
        else:
            key = crypto.serialization.load_pem_public_key(data)
    except (ValueError, crypto.UnsupportedAlgorithm):
        raise AutosegInputError(f"{path}: not a PEM public key") from None
    if not isinstance(key, crypto.ed25519.Ed25519PublicKey):
        raise AutosegInputError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def trusted_key_sources(explicit: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """Where trusted public keys are: ``explicit`` (``--trust-key``) and ``$AUTOSEG_TRUSTED_KEYS``."""
    sources = [Path(item) for item in explicit or ()]
    environment = os.environ.get(TRUSTED_KEYS_ENV, "")
    sources += [Path(item) for item in environment.split(os.pathsep) if item.strip()]
    return sources


def trusted_public_keys(explicit: Iterable[str | os.PathLike] | None = None) -> dict[str, Any]:
    """Key id -> public key, from :func:`trusted_key_sources` (files, or folders of ``*.pem``/``*.pub``);
    empty when none is configured. A source that is missing or holds no key is an error: a trust
    policy that silently trusts nothing would look like one that is in force."""
    keys: dict[str, Any] = {}
    for source in trusted_key_sources(explicit):
        if source.is_dir():
            files = sorted(path for path in source.iterdir()
                           if path.is_file() and path.name.lower().endswith(PUBLIC_KEY_ENDINGS))
            if not files:
                raise AutosegInputError(f"{source}: trusted-key folder holds no public key "
                                        f"({' or '.join(PUBLIC_KEY_ENDINGS)} files)")
        elif source.is_file():
            files = [source]
        else:
            where = f" (from ${TRUSTED_KEYS_ENV})" if str(source) in os.environ.get(TRUSTED_KEYS_ENV, "") else ""
            raise AutosegInputError(f"{source}: trusted key not found{where}")
        for path in files:
            key = load_public_key(path)
            keys[key_id(key)] = key
    return keys


def signature_document(manifest_bytes: bytes, private_key_path: str | os.PathLike) -> bytes:
    """``signature.json``'s bytes: the Ed25519 signature of ``manifest_bytes`` by the key in the file."""
    private = load_private_key(private_key_path)
    signature = private.sign(manifest_bytes)
    return json.dumps({"format": SIGNATURE_FORMAT, "algorithm": SIGNATURE_ALGORITHM,
                       "key_id": key_id(private.public_key()), "signed_member": "manifest.json",
                       "signature": base64.b64encode(signature).decode("ascii")}, indent=2).encode()


def verify_manifest_signature(bundle: str | os.PathLike, manifest_bytes: bytes, signature_bytes: bytes | None,
                              keys: dict[str, Any]) -> str:
    """Check ``signature_bytes`` (``signature.json``, None when the bundle has none) against ``manifest_bytes``
    and the trusted ``keys``; returns the signing key's id, else a one-line error naming ``bundle``."""
    crypto = _crypto()
    if signature_bytes is None:
        raise AutosegInputError(f"{bundle}: not signed, and trusted keys are set (--trust-key or "
                                f"${TRUSTED_KEYS_ENV}): only bundles signed by one of them are opened")
    try:
        document = json.loads(signature_bytes)
        if not isinstance(document, dict) or document.get("algorithm") != SIGNATURE_ALGORITHM:
            raise ValueError("not an ed25519 signature")
        signer, signature = str(document["key_id"]), base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise AutosegInputError(f"{bundle}: {SIGNATURE} is malformed ({error})") from None
    key = keys.get(signer)
    if key is None:
        raise AutosegInputError(f"{bundle}: signed by key {signer}, which is not among the {len(keys)} trusted "
                                f"key(s) ({', '.join(sorted(keys))})")
    try:
        key.verify(signature, manifest_bytes)
    except crypto.InvalidSignature:
        raise AutosegInputError(f"{bundle}: the signature of key {signer} does not verify: the bundle was changed "
                                "after signing, or the signature is forged") from None
    return signer
