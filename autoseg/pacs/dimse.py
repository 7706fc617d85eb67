"""DIMSE peers: who a node sends to (``AET@HOST:PORT``) and sending DICOM files there by C-STORE.

Built on pynetdicom (the ``dicom`` extra). Every failure is one line naming the peer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegInputError
from autoseg.io.dicom import DICOM_EXTRA

#: An application entity title: 1 to 16 characters of the DICOM default repertoire, no backslash.
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
#: Seconds to wait for a peer to answer an association or a C-STORE.
NETWORK_TIMEOUT_SECONDS = 30


def require_pynetdicom() -> Any:
    """The pynetdicom module, or a one-line error naming the extra."""
    try:
        import pynetdicom
    except ImportError:
        raise AutosegInputError(f"DICOM networking needs pynetdicom: {DICOM_EXTRA}") from None
    return pynetdicom


def checked_ae_title(title: str, option: str = "--ae-title") -> str:
    """``title`` when it is a valid AE title (leading/trailing spaces are not significant), else one line."""
    stripped = title.strip()
    if not AE_TITLE.fullmatch(stripped):
        raise AutosegInputError(f"{option} {title!r}: an AE title is 1 to 16 characters without backslash")
    return stripped


@dataclass(frozen=True)
class Peer:
    """A DICOM node: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, option: str = "--send-to") -> Peer:
        """A peer from ``AET@HOST:PORT`` (``[::1]`` for an IPv6 host); one line when malformed."""
        match = re.fullmatch(r"(?P<aet>[^@]+)@(?P<host>\[[^\]]+\]|[^:\[\]]+):(?P<port>\d{1,5})", text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise AutosegInputError(f"{option} {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
        return cls(checked_ae_title(match["aet"], option), match["host"].strip("[]"), int(match["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def send_files(paths: Sequence[Path], peer: Peer, calling_ae_title: str) -> None:
    """C-STORE the DICOM files ``paths`` to ``peer`` in one association; one line naming the peer
    (and the file) when the association is refused or a store fails."""
    pynetdicom = require_pynetdicom()
    import pydicom

    datasets = [pydicom.dcmread(path) for path in paths]
    ae = pynetdicom.AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT_SECONDS
    for sop_class in sorted({str(dataset.SOPClassUID) for dataset in datasets}):
        ae.add_requested_context(sop_class, [str(dataset.file_meta.TransferSyntaxUID) for dataset in datasets][:1]
                                 + ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    association = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not association.is_established:
        raise AutosegInputError(f"{peer}: the association was refused or the node did not answer")
    try:
        for path, dataset in zip(paths, datasets):
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code is None:
                raise AutosegInputError(f"{peer}: no answer to the C-STORE of {path.name}")
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or success with warnings
                raise AutosegInputError(f"{peer}: C-STORE of {path.name} failed with status 0x{code:04X}")
    finally:
        association.release()
