"""Hostile or damaged shards: compression only when named, size caps read from headers,
unsafe members refused, JSON nested too deep counted per sample. No test allocates more
than a few kB for the huge members it crafts: their headers claim the size, the payload
is a hole in a sparse file or is not there at all."""
from __future__ import annotations

import gzip
import io
import json
import tarfile

import numpy as np
import pytest

from shards.codec import load_json as clips_load_json
from model.clips import ClipConfig
from shards.samples import SubsJson
from model.trainer.shard_stream import StreamState, tar_samples
from model.trainer.data import sample_clips
from shards.members import MB, TRACK_MAX_BYTES, MemberLimits, is_compressed_name
from shards.codec import load_json as codec_load_json
from shards.reader import ShardError, iter_samples

GiB = 1 << 30
DEEP = b"[" * 200_000 + b"]" * 200_000


def member(name: str, data: bytes = b"", size: int | None = None, kind=tarfile.REGTYPE, link: str = "") -> bytes:
    """One member's header (and, when ``size`` is None, its padded payload) as tar bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    info.type, info.linkname, info.mode = kind, link, 0o444
    out = info.tobuf(format=tarfile.USTAR_FORMAT)
    if size is None:
        out += data + b"\0" * (-len(data) % 512)
    return out


def npy(rows: int = 6, width: int = 4) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ones((rows, width), np.float16))
    return buf.getvalue()


def members_of(key: str, **extra) -> bytes:
    meta = json.dumps({"video_id": key}).encode()
    return b"".join(member(f"{key}.{name}", data) for name, data in {"meta.json": meta, **extra}.items())


END = b"\0" * 1024


def write_tar(path, *parts: bytes):
    path.write_bytes(b"".join(parts) + END)
    return path


def sparse_tar(path, key: str, name: str, size: int, tail: bytes):
    """A tar whose member ``key.name`` is ``size`` bytes of hole, followed by ``tail`` and the end marker."""
    with open(path, "wb") as f:
        f.write(members_of("AAAAAAAAAAA"))
        f.write(member(f"{key}.{name}", size=size))
        f.seek(size + (-size % 512), 1)
        f.write(tail + END)
    return path


@pytest.fixture
def extracted(monkeypatch):
    """The member names whose payload a reader asked for."""
    names = []
    real = tarfile.TarFile.extractfile

    def spy(self, info):
        names.append(info.name if isinstance(info, tarfile.TarInfo) else info)
        return real(self, info)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    return names


def stream(path, limits: MemberLimits | None = None):
    state = StreamState()
    kwargs = {"limits": limits} if limits is not None else {}
    samples = list(tar_samples(iter([(0, [str(path)])]), state, **kwargs))
    return [s["__key__"] for s in samples], state.counts


# ---------------------------------------------------------------------------- compression by name only


def test_gzip_named_tar_is_refused_unread(tmp_path, extracted):
    # a 2 GiB member claimed inside a few hundred bytes of gzip: read as a plain tar, it is not one
    bomb = tmp_path / "mmp-000000.tar"
    bomb.write_bytes(gzip.compress(member("BBBBBBBBBBB.r21d.npy", size=2 * GiB) + b"\0" * 4096))
    assert bomb.stat().st_size < 2048
    keys, counts = stream(bomb)
    assert keys == [] and counts["error/shard"] == 1 and extracted == []
    with pytest.raises(ShardError):
        list(iter_samples(bomb))


def test_valid_tar_gz_reads_every_sample_and_nothing_is_truncated(tmp_path):
    plain = write_tar(tmp_path / "plain.tar", *(members_of(k * 11, **{"s3d.npy": npy()}) for k in "ABC"))
    shard = tmp_path / "mmp-000000.tar.gz"
    shard.write_bytes(gzip.compress(plain.read_bytes()))
    keys, counts = stream(shard)
    assert keys == ["A" * 11, "B" * 11, "C" * 11]
    assert counts["skipped/truncated"] == 0 and counts["error/shard"] == 0
    assert [s["__key__"] for s in iter_samples(shard)] == keys
    assert is_compressed_name("s3://b/mmp-000001.tgz?versionId=3") and not is_compressed_name("mmp-000001.tar")


def test_truncated_tar_gz_is_counted(tmp_path):
    plain = write_tar(tmp_path / "plain.tar", *(members_of(k * 11, **{"s3d.npy": npy(200)}) for k in "ABC"))
    data = gzip.compress(plain.read_bytes())
    shard = tmp_path / "mmp-000000.tar.gz"
    shard.write_bytes(data[: len(data) * 2 // 3])
    keys, counts = stream(shard)
    assert counts["error/shard"] == 1 and "C" * 11 not in keys


# ---------------------------------------------------------------------------- size caps from headers


def test_member_over_its_cap_is_skipped_without_reading_it(tmp_path, extracted):
    # the default npy cap is 512 MB; the 600 MB member is a hole, passed over in the stream
    shard = sparse_tar(tmp_path / "mmp-000000.tar", "BBBBBBBBBBB", "r21d.npy", 600 * MB, members_of("CCCCCCCCCCC"))
    keys, counts = stream(shard)
    assert keys == ["AAAAAAAAAAA", "CCCCCCCCCCC"]
    assert counts["skipped/member_too_large"] == 1 and counts["error/shard"] == 0
    assert "BBBBBBBBBBB.r21d.npy" not in extracted


def test_a_2gib_claim_in_a_tiny_tar_gz_is_refused_unread(tmp_path, extracted):
    shard = tmp_path / "mmp-000000.tar.gz"
    shard.write_bytes(gzip.compress(members_of("AAAAAAAAAAA") + member("BBBBBBBBBBB.r21d.npy", size=2 * GiB)))
    keys, counts = stream(shard)
    assert keys == ["AAAAAAAAAAA"]  # the sample before it is whole
    assert counts["skipped/member_too_large"] == 1 and counts["error/shard"] == 1  # and the shard ends short
    assert "BBBBBBBBBBB.r21d.npy" not in extracted


def test_caps_are_per_member_type_and_configurable(tmp_path, extracted):
    shard = write_tar(tmp_path / "mmp-000000.tar", members_of("AAAAAAAAAAA", **{"s3d.npy": npy(600)}),
                      members_of("BBBBBBBBBBB", **{"subs.json": b'{"tracks": {}}' + b" " * 3000}))
    assert stream(shard)[0] == ["AAAAAAAAAAA", "BBBBBBBBBBB"]
    extracted.clear()
    keys, counts = stream(shard, MemberLimits.parse("json=0.002"))
    assert keys == ["AAAAAAAAAAA"] and counts["skipped/member_too_large"] == 1
    assert "BBBBBBBBBBB.subs.json" not in extracted
    limits = MemberLimits.parse("npy=0.001, video=100")
    assert limits.cap("x.npy") == int(0.001 * MB) and limits.cap("mp4") == 100 * MB and limits.cap("a.json") == 64 * MB
    assert [s["__key__"] for s in iter_samples(shard, limits=limits, on_refused=lambda k, r: None)] == ["BBBBBBBBBBB"]
    for bad in ("npy", "npy=-1", "weights=5", "json=lots"):
        with pytest.raises(ValueError, match="KIND=MEGABYTES"):
            MemberLimits.parse(bad)


def test_a_sample_of_too_many_members_is_refused_at_the_first_one_too_many(tmp_path, extracted):
    crowd = {f"x{i}.txt": b"x" for i in range(300)}  # one key, 301 members: over the default 256
    shard = write_tar(tmp_path / "mmp-000000.tar", members_of("AAAAAAAAAAA"), members_of("BBBBBBBBBBB", **crowd),
                      members_of("CCCCCCCCCCC"))
    keys, counts = stream(shard)
    assert keys == ["AAAAAAAAAAA", "CCCCCCCCCCC"] and counts["skipped/too_many_members"] == 1
    assert "BBBBBBBBBBB.x255.txt" not in extracted  # nothing of the sample read past the cap
    refused = []
    assert [s["__key__"] for s in iter_samples(shard, on_refused=lambda k, r: refused.append((k, r)))] == \
        ["AAAAAAAAAAA", "CCCCCCCCCCC"]
    assert refused == [("BBBBBBBBBBB", "sample 'BBBBBBBBBBB' has more than 256 members")]
    assert stream(shard, MemberLimits.parse("members=400"))[0] == ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC"]
    with pytest.raises(ValueError, match="whole number"):
        MemberLimits.parse("members=0.5")


def test_reader_passes_over_a_2gib_member_and_tells_why(tmp_path, extracted):
    # shards.reader seeks over the hole: the 2 GiB are never read, not even skimmed
    shard = sparse_tar(tmp_path / "aligned-000000.tar", "BBBBBBBBBBB", "mp4", 5 * GiB, members_of("CCCCCCCCCCC"))
    refused = []
    keys = [s["__key__"] for s in iter_samples(shard, on_refused=lambda k, r: refused.append((k, r)))]
    assert keys == ["AAAAAAAAAAA", "CCCCCCCCCCC"]
    assert refused[0][0] == "BBBBBBBBBBB" and "over the 4096 MB limit for video" in refused[0][1]
    assert "BBBBBBBBBBB.mp4" not in extracted


def test_a_reader_that_can_do_without_a_member_skips_only_that_member(tmp_path, extracted):
    """With on_skipped, a track over the one track cap (a 100 MB hole here) costs that member:
    it is told before its sample, never read, and the sample comes with its other members."""
    with open(tmp_path / "crawl-000000.tar", "wb") as f:
        f.write(members_of("AAAAAAAAAAA", **{"en.vtt": b"WEBVTT\n"}))
        f.write(members_of("BBBBBBBBBBB"))
        f.write(member("BBBBBBBBBBB.en.vtt", size=100 * MB))
        f.seek(100 * MB, 1)
        f.write(member("BBBBBBBBBBB.de.vtt", b"WEBVTT\n") + member("CCCCCCCCCCC.solo.vtt", size=40 * MB))
        f.seek(40 * MB, 1)
        f.write(members_of("DDDDDDDDDDD") + END)
    events = []
    samples = list(iter_samples(tmp_path / "crawl-000000.tar", on_refused=lambda k, r: events.append(("refused", k)),
                                on_skipped=lambda k, m, size, why: events.append((k, m, size, why))))
    assert [sorted(s) for s in samples] == [["__key__", "en.vtt", "meta.json"], ["__key__", "de.vtt", "meta.json"],
                                            ["__key__"], ["__key__", "meta.json"]]
    assert [s["__key__"] for s in samples] == ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC", "DDDDDDDDDDD"]
    assert events == [("BBBBBBBBBBB", "en.vtt", 100 * MB, "member 'BBBBBBBBBBB.en.vtt' claims 104,857,600 bytes, "
                       "over the 32 MB limit for text members"), ("CCCCCCCCCCC", "solo.vtt", 40 * MB, events[1][3])]
    assert "BBBBBBBBBBB.en.vtt" not in extracted and "CCCCCCCCCCC.solo.vtt" not in extracted
    # without on_skipped the reader refuses the whole sample, as the trainer's stream does
    assert [s["__key__"] for s in iter_samples(tmp_path / "crawl-000000.tar", on_refused=lambda k, r: None)] == \
        ["AAAAAAAAAAA", "DDDDDDDDDDD"]
    assert MemberLimits().cap("x.vtt") == TRACK_MAX_BYTES == 32 * MB


def test_a_huge_extended_header_ends_the_shard_unread(tmp_path):
    pax = member("././@PaxHeader", size=64 * MB, kind=tarfile.XHDTYPE) + b"\0" * 512
    shard = write_tar(tmp_path / "mmp-000000.tar", members_of("AAAAAAAAAAA"), pax)
    with pytest.raises(ShardError, match="extended header claims"):
        list(iter_samples(shard))
    keys, counts = stream(shard)
    assert counts["error/shard"] == 1


# ---------------------------------------------------------------------------- unsafe members


@pytest.mark.parametrize("bad", [
    member("BBBBBBBBBBB.en.vtt", kind=tarfile.SYMTYPE, link="/etc/passwd"),
    member("BBBBBBBBBBB.en.vtt", kind=tarfile.LNKTYPE, link="AAAAAAAAAAA.meta.json"),
    member("/tmp/BBBBBBBBBBB.meta.json", b"{}"),
    member("../BBBBBBBBBBB.meta.json", b"{}"),
])
def test_links_and_escaping_names_are_refused(tmp_path, bad):
    shard = write_tar(tmp_path / "mmp-000000.tar", members_of("AAAAAAAAAAA"), members_of("BBBBBBBBBBB"),
                      bad, members_of("CCCCCCCCCCC"))
    keys, counts = stream(shard)
    assert keys == ["AAAAAAAAAAA", "CCCCCCCCCCC"] and counts["skipped/unsafe_member"] == 1
    refused = []
    assert [s["__key__"] for s in iter_samples(shard, on_refused=lambda k, r: refused.append(r))] == keys
    assert len(refused) == 1 and any(w in refused[0] for w in ("link", "absolute", ".."))


def test_reader_refuses_a_tar_cut_between_members(tmp_path):
    whole = write_tar(tmp_path / "whole.tar", members_of("AAAAAAAAAAA"), members_of("BBBBBBBBBBB")).read_bytes()
    cut = tmp_path / "crawl-000000.tar"
    cut.write_bytes(whole[:-len(END) - 1024])  # BBBBBBBBBBB's meta.json is gone, at a header boundary
    with pytest.raises(ShardError, match="end-of-archive"):
        list(iter_samples(cut))


# ---------------------------------------------------------------------------- JSON nested too deep


def test_json_nested_too_deep_is_a_value_error():
    for load in (codec_load_json, clips_load_json):
        with pytest.raises(ValueError):
            load(DEEP)
    with pytest.raises(ValueError):
        SubsJson.lazy(b'{"tracks": {}, "segments": ' + DEEP + b"}")
    tracks = SubsJson.lazy(b'{"tracks": {"en": {"cues": ' + DEEP + b"}}}")
    with pytest.raises(ValueError):
        tracks.cues("en")


@pytest.mark.parametrize("task,name,data", [
    ("pretrain", "subs.json", b'{"tracks": {"en": {"cues": [[0, 2, "hi"]]}}, "segments": ' + DEEP + b"}"),
    ("pretrain", "subs.json", b'{"tracks": {"en": {"cues": ' + DEEP + b"}}}"),
    ("finetune", "captions.json", DEEP),
])
def test_deep_json_in_a_sample_is_counted_corrupt(tmp_path, task, name, data):
    shard = write_tar(tmp_path / "mmp-000000.tar", members_of("AAAAAAAAAAA", **{"r21d.npy": npy(), name: data}))
    state = StreamState()
    cfg = ClipConfig(task=task, members=("r21d",), langs=("en",))
    clips = list(sample_clips(tar_samples(iter([(0, [str(shard)])]), state), cfg, state, seed=0))
    assert clips == [] and state.counts["skipped/corrupt"] == 1


def test_deep_info_json_is_one_bad_video_not_a_failed_unit(tmp_path):
    from pipeline.subtitles.stage import main as align_main
    from shards.rows import crawl_schema as schema_for
    from shards.layout import CRAWL, UnitFiles
    from shards.reader import read_rows
    from shards.writer import UnitWriter

    vtt = b"WEBVTT\n\n00:00.000 --> 00:02.000\nhello there\n"
    good = {"id": "AAAAAAAAAAA", "duration": 5.0, "language": "en",
            "tracks": {"en": {"kind": "manual", "source_lang": "en", "ext": "vtt"}}}
    with UnitWriter(UnitFiles(tmp_path / "crawl", "crawl", 0), schema_for(["en"]), CRAWL) as w:
        w.write_sample("AAAAAAAAAAA", {"info.json": good, "en.vtt": vtt})
        w.write_sample("BBBBBBBBBBB", {"info.json": DEEP, "en.vtt": vtt})
        for vid in ("AAAAAAAAAAA", "BBBBBBBBBBB"):
            w.add_row({"video_id": vid, "status": "ok"})
    out = tmp_path / "aligned"
    assert align_main(["--crawl", str(tmp_path / "crawl"), "--out", str(out), "--langs", "en", "--workers", "1",
                       "--no-progress"]) == 0
    rows = {r["video_id"]: r for r in read_rows(UnitFiles(out, "aligned", 0).parquet)}
    assert rows["BBBBBBBBBBB"]["status"] == "bad_sample" and "nested too deeply" in rows["BBBBBBBBBBB"]["error"]
    assert rows["AAAAAAAAAAA"]["status"] == "ok"
