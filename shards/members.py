"""Which tar members a reader accepts, and how a shard's name says it is read.

A shard is read as a plain tar unless its name says it is compressed (``.tar.gz``,
``.tgz``): a gzip stream named ``.tar`` is refused, never inflated on trust. Every
member is checked from its header alone, before any of its payload is read:

- a link (symbolic or hard), an absolute name or a name with ``..`` is unsafe;
- a member whose header claims more bytes than its type's cap (``MemberLimits``) is
  too large: its payload is passed over, never held in memory;
- a GNU long-name or pax extended header is read whole by tarfile itself, so one that
  claims more than ``MAX_EXTENDED_HEADER`` bytes ends the shard (``BoundedTarInfo``).

Readers skip the sample that holds a refused member and count why.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, fields

MB = 1 << 20

# tarfile reads a long-name or pax header's payload in one read(); ours are a few hundred bytes
MAX_EXTENDED_HEADER = 1 * MB

COMPRESSED_SUFFIXES = (".tar.gz", ".tgz")

VIDEO_SUFFIXES = ("mp4", "webm", "mkv", "m4a", "mov", "flv", "3gp")
TEXT_SUFFIXES = ("vtt", "txt", "srt")


@dataclass(frozen=True)
class MemberLimits:
    """The largest member, in bytes, a reader accepts, per member type (the name's last suffix)."""

    npy: int = 512 * MB  # a feature array: 1024 float32 a row, one row a second, is 36 hours of video
    json: int = 64 * MB  # subs.json of a long video holds nine tracks of cues; info.json is trimmed
    text: int = 64 * MB  # a raw .vtt track as fetched (the crawl caps a response at 256 MB)
    video: int = 4096 * MB  # a downloaded video (mmp-crawl --download-video)
    other: int = 64 * MB

    def kind(self, member: str) -> str:
        suffix = member.rsplit(".", 1)[-1].lower()
        if suffix in ("npy", "json"):
            return suffix
        if suffix in TEXT_SUFFIXES:
            return "text"
        if suffix in VIDEO_SUFFIXES:
            return "video"
        return "other"

    def cap(self, member: str) -> int:
        return getattr(self, self.kind(member))

    @classmethod
    def parse(cls, spec: str | None) -> "MemberLimits":
        """Limits from ``npy=512,json=64,text=64,video=4096,other=64`` (megabytes; any subset)."""
        names = [f.name for f in fields(cls)]
        values = {}
        for part in (spec or "").split(","):
            if not part.strip():
                continue
            name, _, value = part.partition("=")
            name = name.strip()
            try:
                megabytes = float(value)
            except ValueError:
                megabytes = -1.0
            if name not in names or megabytes <= 0:
                raise ValueError(f"member size limit {part.strip()!r} is not KIND=MEGABYTES with KIND one of "
                                 f"{', '.join(names)} and a positive size, e.g. 'npy=512,json=64'")
            values[name] = int(megabytes * MB)
        return cls(**values)


DEFAULT_LIMITS = MemberLimits()


def is_compressed_name(url: str) -> bool:
    """True when a shard's name says gzip (``.tar.gz``, ``.tgz``); a query string is ignored."""
    return str(url).split("?", 1)[0].lower().endswith(COMPRESSED_SUFFIXES)


def unsafe_reason(info: tarfile.TarInfo) -> str | None:
    """Why a member may not be read as a sample member, or None. The writer never makes
    links, absolute names or names that climb out with ``..``."""
    if info.issym():
        return "a symbolic link"
    if info.islnk():
        return "a hard link"
    name = info.name
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return "an absolute name"
    if ".." in name.replace("\\", "/").split("/"):
        return "a name with '..'"
    return None


def refusal(info: tarfile.TarInfo, member: str, limits: MemberLimits = DEFAULT_LIMITS) -> tuple[str, str] | None:
    """``(count name, reason)`` when a member must not be read, from its header alone; else None."""
    unsafe = unsafe_reason(info)
    if unsafe is not None:
        return "unsafe_member", f"member {info.name!r} is {unsafe}"
    cap = limits.cap(member)
    if info.size > cap:
        return "member_too_large", (f"member {info.name!r} claims {info.size:,} bytes, over the "
                                    f"{cap / MB:g} MB limit for {limits.kind(member)} members")
    return None


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses a long-name or pax extended header larger than
    ``MAX_EXTENDED_HEADER`` before tarfile reads it whole into memory."""

    def _proc_member(self, tar):
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                    tarfile.SOLARIS_XHDTYPE)
        if self.type in extended and self.size > MAX_EXTENDED_HEADER:
            raise tarfile.ReadError(f"an extended header claims {self.size:,} bytes; refusing to read it")
        return super()._proc_member(tar)
