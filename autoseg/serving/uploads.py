"""An uploaded scan as a case folder that :func:`autoseg.inference.predict_folder.predict_folder` reads.

An upload is one file: an image in any format autoseg reads (NIfTI, NRRD, MHA, ...), or a zip
holding a DICOM series (any folder layout) or a multi-channel case's image files
(``{case}_0000.nii.gz``, ``{case}_0001.nii.gz``, ...). Its format comes from the file name the
client gives, else from its first bytes (:func:`sniff_ending`). Zips are unpacked with limits on
member count and unpacked size (a zip bomb is refused before anything is written) and member
names that would leave the folder are refused, as are zips whose names collide (a file ``a``
beside ``a/b``, one name twice) or whose names the file system cannot hold. What an upload decodes
to is bounded too (:func:`decoded_voxels`): a small compressed file can hold a huge volume.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from autoseg.errors import AutosegInputError
from autoseg.io.dicom import find_series
from autoseg.io.formats import ending_of, format_for, known_file_endings

ZIP_ENDING = ".zip"
#: Most members a zipped upload may have (a CT series of 0.5 mm slices has about 2,000).
MAX_ZIP_MEMBERS = 20_000
#: A zip may unpack to at most this many times the service's upload limit.
MAX_ZIP_EXPANSION = 8
#: Case name used when the client names no file.
DEFAULT_CASE_NAME = "upload"
#: Longest case id kept from a client's file name (characters); a longer one is cut and given a
#: hash suffix, so that every file autoseg derives from it stays under the 255-byte name limit.
MAX_CASE_NAME = 96
#: Longest zip member name component accepted (bytes, UTF-8): the file-system limit less room for
#: the temporary and output names derived from it.
MAX_MEMBER_NAME_BYTES = 200


class UploadTooLarge(AutosegInputError):
    """The upload, once unpacked or decoded, is over one of the service's limits (HTTP 413)."""

_MAGIC = ((0, b"PK\x03\x04", ZIP_ENDING), (0, b"\x1f\x8b", ".nii.gz"), (0, b"NRRD", ".nrrd"),
          (344, b"n+1\x00", ".nii"), (0, b"ObjectType", ".mha"))


def sniff_ending(head: bytes) -> str | None:
    """The file ending of an upload told by its first bytes (at least 348), or None.

    Zip, gzip (taken as ``.nii.gz``, the common compressed medical format), NRRD, NIfTI-1
    (``n+1`` magic at byte 344) and MetaImage (``ObjectType`` header)."""
    for offset, magic, ending in _MAGIC:
        if head[offset: offset + len(magic)] == magic:
            return ending
    return None


def upload_ending(filename: str | None, head: bytes) -> str:
    """The ending that says how to read an upload: from ``filename`` when it has a known one, else
    sniffed from ``head``; a one-line error otherwise."""
    if filename:
        ending = ending_of(Path(filename)).lower()
        if ending == ZIP_ENDING or ending in {known.lower() for known in known_file_endings()}:
            return ending
    sniffed = sniff_ending(head)
    if sniffed is None:
        named = f"{filename}: " if filename else ""
        raise AutosegInputError(f"{named}cannot tell the image format from the name or the content; send a NIfTI, "
                                f"NRRD or MHA file, or a zip of a DICOM series, and name it (X-Filename header)")
    return sniffed


def case_name(filename: str | None) -> str:
    """The case id for an upload: its file name without the ending and a ``_0000`` channel suffix,
    reduced to letters, digits, ``-``, ``_`` and ``.`` (:data:`DEFAULT_CASE_NAME` when nothing is left)."""
    if not filename:
        return DEFAULT_CASE_NAME
    name = PurePosixPath(filename.replace("\\", "/")).name
    stem = name[: len(name) - len(ending_of(Path(name)))] if ending_of(Path(name)) else name
    stem = re.sub(r"_\d{4}$", "", stem)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip("._")
    if len(stem) > MAX_CASE_NAME:
        digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
        stem = f"{stem[: MAX_CASE_NAME - 9]}-{digest}"
    return stem or DEFAULT_CASE_NAME


def member_problem(names: list[str]) -> str | None:
    """Why a zip's member names cannot be unpacked side by side, or None: a name leaving the folder
    (absolute, ``..``, a drive letter), a name component over :data:`MAX_MEMBER_NAME_BYTES`, one name
    twice, or a file that another member needs as a folder (``a`` and ``a/b``). Pure."""
    files: set[tuple[str, ...]] = set()
    for name in names:
        member = PurePosixPath(name.replace("\\", "/"))
        if not member.parts or member.parts == (".",) or "\x00" in name:
            return f"zip member {name!r} has no usable name"
        if member.is_absolute() or ".." in member.parts or re.match(r"^[A-Za-z]:", name):
            return f"zip member {name!r} points outside the archive"
        if any(len(part.encode("utf-8", "surrogateescape")) > MAX_MEMBER_NAME_BYTES for part in member.parts):
            return f"zip member name {name[:60]!r}... is longer than {MAX_MEMBER_NAME_BYTES} bytes"
        if member.parts in files:
            return f"zip holds {name!r} twice"
        files.add(member.parts)
    for parts in files:
        for depth in range(1, len(parts)):
            if parts[:depth] in files:
                return (f"zip holds both a file {'/'.join(parts[:depth])!r} and {'/'.join(parts)!r}, which "
                        "needs it as a folder")
    return None


def unpack_zip(path: Path, destination: Path, max_unpacked_bytes: int, label: str) -> None:
    """Unpack a zip into ``destination`` after checking it (``label`` names it in errors): readable,
    at most :data:`MAX_ZIP_MEMBERS` members, at most ``max_unpacked_bytes`` unpacked, no member
    name leaving the folder; macOS ``__MACOSX``/``._`` entries are skipped."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS:
                raise AutosegInputError(f"{label}: zip has {len(members)} files, more than {MAX_ZIP_MEMBERS}")
            unpacked = sum(info.file_size for info in members)
            if unpacked > max_unpacked_bytes:
                raise UploadTooLarge(f"{label}: zip unpacks to {unpacked / 2**20:.0f} MiB, more than "
                                     f"{max_unpacked_bytes / 2**20:.0f} MiB")
            problem = member_problem([info.filename for info in members])
            if problem:
                raise AutosegInputError(f"{label}: {problem}")
            written = 0
            for info in members:
                member = PurePosixPath(info.filename.replace("\\", "/"))
                if "__MACOSX" in member.parts or member.name.startswith("._"):
                    continue
                target = destination.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                written += _copy_member(archive, info, target, max_unpacked_bytes - written, label)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as error:
        raise AutosegInputError(f"{label}: not a readable zip ({error or type(error).__name__})") from None


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, allowed_bytes: int,
                 label: str) -> int:
    """Copy one member to ``target``, stopping as soon as it yields more than it declares or than
    ``allowed_bytes`` (the declared sizes are the client's word); returns the bytes written."""
    limit = min(info.file_size, allowed_bytes)
    written = 0
    with archive.open(info) as source, open(target, "wb") as copy:
        while block := source.read(1 << 20):
            written += len(block)
            if written > limit:
                raise UploadTooLarge(f"{label}: zip member {info.filename!r} unpacks to more than the "
                                     f"{info.file_size} bytes it declares")
            copy.write(block)
    return written


def place_upload(upload: Path, filename: str | None, input_dir: Path, max_unpacked_bytes: int) -> str:
    """Turn an uploaded file into ``input_dir``'s content for ``predict_folder``; returns the case name.

    An image becomes ``{case}_0000{ending}``. A zip is unpacked: image files in it (at any depth)
    are moved to ``input_dir`` under their own names, which must follow ``{case}_{XXXX}{ending}``;
    a zip without image files is taken as DICOM (``input_dir/{case}/...``).
    """
    with open(upload, "rb") as handle:
        head = handle.read(512)
    label = filename or DEFAULT_CASE_NAME
    if not head:
        raise AutosegInputError(f"{label}: the upload is empty")
    ending = upload_ending(filename, head)
    case = case_name(filename)
    input_dir.mkdir(parents=True, exist_ok=True)
    if ending != ZIP_ENDING:
        shutil.move(str(upload), input_dir / f"{case}_0000{ending}")
        return case
    staging = input_dir.parent / "unpacked"
    unpack_zip(upload, staging, max_unpacked_bytes, label)
    endings = tuple(known.lower() for known in known_file_endings())
    images = [path for path in sorted(staging.rglob("*")) if path.is_file() and path.name.lower().endswith(endings)]
    if not images:
        shutil.move(str(staging), input_dir / case)
        return case
    for path in images:
        if (input_dir / path.name).exists():
            raise AutosegInputError(f"{label}: zip holds two files named {path.name}")
        shutil.move(str(path), input_dir / path.name)
    cases = {re.sub(r"_\d{4}$", "", path.name[: -len(ending_of(path))]) for path in images}
    if len(cases) > 1:
        raise AutosegInputError(f"{label}: zip holds {len(cases)} cases ({', '.join(sorted(cases)[:3])}, ...); "
                                "send one case per request")
    return cases.pop()


def decoded_voxels(input_dir: Path) -> int:
    """Voxels the placed upload decodes to (every channel file or DICOM series in ``input_dir``), read
    from the headers without decoding the pixels."""
    voxels = 0
    for path in sorted(input_dir.iterdir()):
        if path.is_dir():  # a DICOM series, its files at any depth
            voxels += sum(int(header.rows or 0) * int(header.columns or 0) * max(int(header.frames), 1)
                          for series in find_series(path) for header in series.slices)
        else:
            voxels += format_for(path).voxel_count(path)
    return voxels


def check_decoded_size(input_dir: Path, max_voxels: int, label: str) -> None:
    """Refuse (:class:`UploadTooLarge`, one line naming ``label``) an upload whose images decode to
    more than ``max_voxels`` voxels."""
    voxels = decoded_voxels(input_dir)
    if voxels > max_voxels:
        raise UploadTooLarge(f"{label}: decodes to {voxels:,} voxels, more than this server's limit of "
                             f"{max_voxels:,} (--max-megavoxels)")
