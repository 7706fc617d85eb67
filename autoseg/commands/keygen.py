"""``autoseg keygen``: a new Ed25519 key pair for signing model bundles (:mod:`autoseg.inference.bundle_signature`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    """Register ``autoseg keygen``."""
    parser = subparsers.add_parser(
        "keygen", help="write a key pair that signs bundles (`export --sign-key`) and verifies them (`--trust-key`)",
        description=("Write a new Ed25519 key pair: DIR/NAME.pem, the private key (mode 0600; keep it secret, "
                     "use it with `autoseg export --sign-key`), and DIR/NAME.pub.pem, the public key (give it to "
                     "whoever opens the bundles: `autoseg predict --trust-key` or $AUTOSEG_TRUSTED_KEYS). "
                     "Existing files are never overwritten. Needs pip install 'autoseg[sign]'."))
    parser.add_argument("-o", "--output", required=True, help="folder to write the two key files to")
    parser.add_argument("--name", default=None, help="file name stem of the keys (default: autoseg-signing)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg keygen``."""
    from autoseg.errors import AutosegInputError
    from autoseg.inference.bundle_signature import DEFAULT_KEY_NAME, generate_key_pair, key_id, load_public_key
    from autoseg.plans.schema import is_folder_name

    name = args.name or DEFAULT_KEY_NAME
    if not is_folder_name(name):
        raise AutosegInputError(f"--name {name!r}: use letters, digits and _ . + - only")
    private, public = generate_key_pair(args.output, name)
    print(f"wrote {private} (private: keep it secret; autoseg export ... --sign-key {private}) and {public} "
          f"(public, key {key_id(load_public_key(public))}: autoseg predict ... --trust-key {public})")
    return 0
