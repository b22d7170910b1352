"""Which tar members a reader accepts, and how a shard's name says it is read.

A shard is read as a plain tar unless its name says it is compressed (``.tar.gz``,
``.tgz``): a gzip stream named ``.tar`` is refused, never inflated on trust. Every
member is checked from its header alone, before any of its payload is read:

- a link (symbolic or hard), an absolute name or a name with ``..`` is unsafe;
- a member whose header claims more bytes than its type's cap (``MemberLimits``) is
  too large: its payload is passed over, never held in memory;
- a sample of more members than ``MemberLimits.members`` is refused at the first one too
  many (one key repeated a million times would otherwise be held whole);
- given a sample cap (``SampleGrouper(max_sample_bytes=)``), a sample whose members' headers
  claim more bytes in all is refused at the member that crosses it (six members each under
  its cap still add up);
- a GNU long-name or pax extended header is read whole by tarfile itself, so one that
  claims more than ``MAX_EXTENDED_HEADER`` bytes ends the shard (``BoundedTarInfo``).

``SampleGrouper`` applies these rules and groups members into samples; both readers (the
stages' ``shards.reader`` and the trainer's ``model.trainer.shard_stream``) use it, and each says
what a refusal or a pickle-format member costs: the whole sample, or (``on_skipped``) only a
member over its cap, the sample's other members still arriving.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, fields

MB = 1 << 20

# tarfile reads a long-name or pax header's payload in one read(); ours are a few hundred bytes
MAX_EXTENDED_HEADER = 1 * MB

COMPRESSED_SUFFIXES = (".tar.gz", ".tgz")

# Extensions a downloaded video may carry (crawl members, a directory of videos), in lookup order;
# audio-only downloads too (m4a, mka): they get a recorded no_video_stream.
VIDEO_SUFFIXES = ("mp4", "webm", "mkv", "mov", "avi", "flv", "3gp", "m4v", "ts", "mpg", "mpeg", "ogv", "wmv",
                  "m4a", "mka")
TEXT_SUFFIXES = ("vtt", "txt", "srt")

# The largest subtitle track (``<lang>.vtt``), about 100 hours of rolling captions: the crawl
# stores none larger, a reader skips a larger text member, mmp-align cleans none larger.
TRACK_MAX_BYTES = 32 * MB


@dataclass(frozen=True)
class MemberLimits:
    """The largest member, in bytes, a reader accepts, per member type (the name's last suffix)."""

    npy: int = 512 * MB  # a feature array: 1024 float32 a row, one row a second, is 36 hours of video
    json: int = 64 * MB  # subs.json of a long video holds nine tracks of cues; info.json is trimmed
    text: int = TRACK_MAX_BYTES  # a raw .vtt track as fetched: the crawl stores none larger
    video: int = 4096 * MB  # a downloaded video (mmp-crawl --download-video)
    other: int = 64 * MB
    members: int = 256  # members of one sample: a crawl sample holds info, subs, a track per language, a video

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
        """Limits from ``npy=512,json=64,text=32,video=4096,other=64`` (megabytes; any subset), and
        ``members=N``, the most members one sample may have."""
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
            if name == "members":
                if megabytes < 1 or megabytes != int(megabytes):
                    raise ValueError(f"member limit {part.strip()!r}: members=N takes a whole number of at least 1")
                values[name] = int(megabytes)
                continue
            if name not in names or megabytes <= 0:
                raise ValueError(f"member size limit {part.strip()!r} is not KIND=MEGABYTES with KIND one of "
                                 f"{', '.join(n for n in names if n != 'members')} and a positive size, e.g. "
                                 "'npy=512,json=64' (or members=N)")
            values[name] = int(megabytes * MB)
        return cls(**values)


DEFAULT_LIMITS = MemberLimits()

# pickle formats: never read as sample members (the writer refuses to write them)
FORBIDDEN_SUFFIXES = (".pyd", ".pickle", ".pkl", ".pth", ".pt")


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


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/KEY.en.vtt`` -> (``KEY``, ``en.vtt``), WebDataset's rule: the key ends at the first dot."""
    base = name.rsplit("/", 1)[-1]
    key, _, member = base.partition(".")
    return key, member


class SampleGrouper:
    """Members in tar order in, whole samples out: ``{"__key__": key, **extra, member: bytes}``.

    ``feed(info, read)`` returns the samples finished by this member (the one before it, once
    its key changes); ``finish()`` the last one. A refused member (``refusal``, or one member
    too many) drops its whole sample, unread, after ``on_refused(key, count_name, reason)``;
    a pickle-format member goes to ``on_pickle(info)``, which raises or skips it. With
    ``on_skipped``, a member that is only over its size cap costs itself alone: it is passed
    over, unread, after ``on_skipped(key, member, size, reason)``, and its sample is kept.
    ``max_sample_bytes`` (None: no cap beyond the members') caps the bytes of one sample's
    members together, counted from their headers before a byte is read.
    """

    def __init__(self, limits: MemberLimits = DEFAULT_LIMITS, *, on_refused, on_pickle, on_skipped=None,
                 extra: dict | None = None, max_sample_bytes: int | None = None):
        self.limits, self.on_refused, self.on_pickle, self.on_skipped = limits, on_refused, on_pickle, on_skipped
        self.extra = dict(extra or {})
        self.max_sample_bytes = max_sample_bytes
        self.current: dict | None = None
        self._refused_key = None
        self._bytes = 0  # claimed by the headers of the current sample's members
        self._skipped = 0  # members of the current sample passed over, counted against limits.members

    def feed(self, info: tarfile.TarInfo, read) -> list[dict]:
        key, member = split_member_name(info.name)
        if key == self._refused_key:
            return []
        done = []
        if self.current is not None and self.current["__key__"] != key:
            done.append(self.current)
            self.current = None
        if self.current is None:
            self._bytes = 0
        why = refusal(info, member, self.limits)
        held = len(self.current) - 1 - len(self.extra) + self._skipped if self.current is not None else 0
        if why is None and held >= self.limits.members:
            why = "too_many_members", f"sample {key!r} has more than {self.limits.members} members"
        if why is None and self.max_sample_bytes is not None and self._bytes + info.size > self.max_sample_bytes:
            why = "sample_too_large", (f"sample {key!r} claims more than {self.max_sample_bytes / MB:g} MB in all "
                                       f"(member {info.name!r} takes it to {self._bytes + info.size:,} bytes)")
        if why is not None and why[0] == "member_too_large" and self.on_skipped is not None and \
                held < self.limits.members:
            self._open(key)
            self._skipped += 1
            self.on_skipped(key, member, info.size, why[1])
            return done
        if why is not None:
            self.on_refused(key, *why)
            self._refused_key, self.current = key, None
            return done
        if member.endswith(FORBIDDEN_SUFFIXES):
            self.on_pickle(info)
            return done
        data = read(info)
        self._bytes += info.size
        self._open(key)
        self.current[member] = data
        return done

    def _open(self, key: str) -> None:
        if self.current is None:
            self.current, self._skipped = {"__key__": key, **self.extra}, 0

    def finish(self) -> dict | None:
        last, self.current = self.current, None
        return last


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses a long-name or pax extended header larger than
    ``MAX_EXTENDED_HEADER`` before tarfile reads it whole into memory."""

    def _proc_member(self, tar):
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                    tarfile.SOLARIS_XHDTYPE)
        if self.type in extended and self.size > MAX_EXTENDED_HEADER:
            raise tarfile.ReadError(f"an extended header claims {self.size:,} bytes; refusing to read it")
        return super()._proc_member(tar)
