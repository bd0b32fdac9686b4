"""The download path against a loopback HTTP server: success, resume, retries,
mirrors, checksum mismatch, 404, unreachable host, local copies."""
import hashlib
import socket

import pytest

from conftest import sha256
from core import StageError
from core.fetch import ChecksumError, DownloadError, fetch, local_path, parse_checksum, verify

DATA = bytes(range(256)) * 4096  # 1 MiB, so a cut falls mid-file


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_verifies_and_keeps_file(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA)
    path = fetch([url], sha256(DATA), tmp_path, size_bytes=len(DATA))
    assert path == tmp_path / "a.tar.gz" and path.read_bytes() == DATA
    assert not list(tmp_path.glob("*.part"))
    # A second call uses the verified copy instead of downloading again.
    assert fetch([url], sha256(DATA), tmp_path) == path
    assert len(server.log) == 1


def test_md5_checksum(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA)
    assert fetch([url], "md5:" + hashlib.md5(DATA).hexdigest(), tmp_path).read_bytes() == DATA


def test_cut_connection_resumes_with_range(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA)
    server.cut["/a.tar.gz"] = 300_000
    path = fetch([url], sha256(DATA), tmp_path, retries=2, backoff_s=0)
    assert path.read_bytes() == DATA
    assert server.log == [("/a.tar.gz", None), ("/a.tar.gz", "bytes=300000-")]


def test_interrupted_run_resumes_in_next_run(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA)
    server.cut["/a.tar.gz"] = 100_000
    with pytest.raises(DownloadError, match="connection closed after 100,000"):
        fetch([url], sha256(DATA), tmp_path, retries=1)
    assert (tmp_path / "a.tar.gz.part").stat().st_size == 100_000
    assert not (tmp_path / "a.tar.gz").exists()
    assert fetch([url], sha256(DATA), tmp_path, retries=1).read_bytes() == DATA
    assert server.log[-1] == ("/a.tar.gz", "bytes=100000-")


def test_complete_part_file_is_verified_not_refetched(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA)
    (tmp_path / "a.tar.gz.part").write_bytes(DATA)
    assert fetch([url], sha256(DATA), tmp_path).read_bytes() == DATA
    assert server.log == [("/a.tar.gz", f"bytes={len(DATA)}-")]  # answered 416: nothing left


def test_checksum_mismatch_fails_and_removes_download(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA)
    with pytest.raises(DownloadError, match="sha256 is .*expected 0000"):
        fetch([url], "sha256:" + "0" * 64, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_fails_on_size(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA[:1000])
    with pytest.raises(DownloadError, match="size is 1,000 bytes, expected 1,048,576"):
        fetch([url], sha256(DATA), tmp_path, size_bytes=len(DATA))
    assert list(tmp_path.iterdir()) == []


def test_404_is_not_retried_and_next_mirror_is_used(server, tmp_path):
    good = server.serve("/mirror2/a.tar.gz", DATA)
    missing = server.url("/mirror1/a.tar.gz")
    assert fetch([missing, good], sha256(DATA), tmp_path, retries=3).read_bytes() == DATA
    assert [p for p, _ in server.log] == ["/mirror1/a.tar.gz", "/mirror2/a.tar.gz"]


def test_404_everywhere_names_each_source(server, tmp_path):
    with pytest.raises(DownloadError, match=r"(?s)/x/a.tar.gz: HTTP 404.*/y/a.tar.gz: HTTP 404"):
        fetch([server.url("/x/a.tar.gz"), server.url("/y/a.tar.gz")], sha256(DATA), tmp_path)


def test_unreachable_host_retries_then_fails(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/a.tar.gz"
    with pytest.raises(DownloadError, match=r"refused.*after 2 tries"):
        fetch([url], sha256(DATA), tmp_path, retries=2, backoff_s=0)
    assert not list(tmp_path.glob("*a.tar.gz"))


def test_download_needs_pinned_checksum(server, tmp_path):
    with pytest.raises(StageError, match="needs a pinned checksum"):
        fetch([server.serve("/a.tar.gz", DATA)], None, tmp_path)
    assert server.log == []


def test_local_path_and_file_url_used_in_place(tmp_path):
    archive = tmp_path / "local.tar.gz"
    archive.write_bytes(DATA)
    assert fetch([str(archive)], sha256(DATA), tmp_path / "dl") == archive
    assert fetch([archive.as_uri()], sha256(DATA), tmp_path / "dl") == archive
    assert not (tmp_path / "dl").exists()  # nothing copied
    with pytest.raises(ChecksumError, match="corrupt or wrong file"):
        fetch([str(archive)], "sha256:" + "1" * 64, tmp_path / "dl")


def test_missing_local_path_falls_through_to_next_source(server, tmp_path):
    url = server.serve("/a.tar.gz", DATA)
    assert fetch([str(tmp_path / "nope.tar.gz"), url], sha256(DATA), tmp_path).read_bytes() == DATA
    with pytest.raises(DownloadError, match="nope.tar.gz: no such file"):
        fetch([str(tmp_path / "nope.tar.gz")], sha256(DATA), tmp_path)


def test_source_parsing():
    assert local_path("https://example.org/a.tgz") is None
    assert str(local_path("file:///data/a.tgz")) == "/data/a.tgz"
    assert str(local_path("../shared/a.tgz")) == "../shared/a.tgz"
    with pytest.raises(StageError, match="unsupported URL scheme 'ftp'"):
        local_path("ftp://example.org/a.tgz")
    assert parse_checksum("md5:" + "AB" * 16) == ("md5", "ab" * 16)
    with pytest.raises(StageError, match="sha256:<hex> or md5:<hex>"):
        parse_checksum("crc32:1234")


def test_verify_without_checksum_checks_size_only(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    verify(f, None, 3)
    with pytest.raises(ChecksumError, match="size is 3 bytes, expected 4"):
        verify(f, None, 4)


@pytest.mark.parametrize("announced", [True, False], ids=["announced", "no-length"])
def test_download_without_a_size_pin_stops_at_the_unpinned_limit(server, tmp_path, monkeypatch, announced):
    """With `size_bytes: null` a download is still bounded: a server that sends without end is cut at
    MAX_UNPINNED_BYTES (lowered here), not retried, and leaves nothing behind."""
    from core import fetch as fetch_module
    monkeypatch.setattr(fetch_module, "MAX_UNPINNED_BYTES", 50_000)
    data = bytes(range(256)) * 400
    url = server.serve("/a.tar.gz", data)
    if not announced:
        server.unannounced.add("/a.tar.gz")
    said = (r"announces 102,400 bytes, over the 50,000 allowed without a `size_bytes` pin" if announced else
            r"sent more than the 50,000 bytes allowed without a `size_bytes` pin")
    with pytest.raises(DownloadError, match=said):
        fetch([url], sha256(data), tmp_path / "dl", size_bytes=None, retries=3)
    assert len(server.log) == 1 and list((tmp_path / "dl").iterdir()) == []


def test_download_without_a_size_pin_under_the_limit_is_verified_and_kept(server, tmp_path):
    data = bytes(range(256)) * 400
    path = fetch([server.serve("/a.tar.gz", data)], sha256(data), tmp_path / "dl", size_bytes=None)
    assert path.read_bytes() == data


def test_retries_back_off_doubling_from_backoff_s(tmp_path, monkeypatch):
    """Tries at one mirror wait backoff_s, then twice that, and so on; no wait before the first."""
    from core import fetch as fetch_module
    waits = []
    monkeypatch.setattr(fetch_module.time, "sleep", waits.append)
    with socket.socket() as s:  # a port nobody listens on: every try is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"after 4 tries"):
        fetch([f"http://127.0.0.1:{port}/a.tar.gz"], "sha256:" + "0" * 64, tmp_path / "dl", retries=4, backoff_s=1.5)
    assert waits == [1.5, 3.0, 6.0]
