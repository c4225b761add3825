"""padim_repro.study.download against a local HTTP server on 127.0.0.1 (no internet): resume, fallback, errors.

The archives are tiny synthetic MVTec layouts built here; everything is written under ``tmp_path``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from padim_repro.study import download as dl
from padim_repro.study.download import ARCHIVE_NAME, DownloadError, download_command, download_mvtec

PATH = "/" + ARCHIVE_NAME
#: What the archive built by ``make_archive`` holds: (train good, test, defect types).
COUNTS = {"bottle": (3, 3, 2)}
FAST = {"retries": 2, "backoff": 0, "timeout": 5, "progress": False, "expected_counts": COUNTS}


def _png(seed: int) -> bytes:
    """A small noisy (so incompressible) PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_archive(category: str = "bottle") -> bytes:
    """A .tar.gz of one category: 3 train, 1 good + 2 defect test images in 2 defect types, their masks."""
    names = ["train/good/000.png", "train/good/001.png", "train/good/002.png", "test/good/000.png",
             "test/broken_large/000.png", "test/contamination/000.png", "ground_truth/broken_large/000_mask.png",
             "ground_truth/contamination/000_mask.png"]  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, name in enumerate(f"{category}/{n}" for n in names):
            data = _png(i)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("license.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"cc\n"))
    return buf.getvalue()


ARCHIVE = make_archive()
SHA = hashlib.sha256(ARCHIVE).hexdigest()


@dataclass
class Server:
    """What the handler serves and how; ``requests`` records (path, Range header, status, body bytes sent)."""

    files: dict[str, bytes] = field(default_factory=dict)
    range_support: bool = True
    drop_after: int | None = None  # first request for a file: full Content-Length, then only this many bytes
    bad_range_start: bool = False  # answer 206 with a Content-Range starting at 0 whatever was asked
    trickle: float | None = None  # send the body one byte every this many seconds
    requests: list[dict] = field(default_factory=list)
    base: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = PATH) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            record = {"path": self.path, "range": rng, "status": 404, "sent": 0}
            state.requests.append(record)
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng and state.range_support else 0
            if start >= len(data) and start:
                record["status"] = 416
                self.send_error(416)
                return
            if state.bad_range_start and rng:
                start, body, status = 0, data, 206
            else:
                body, status = data[start:], (206 if start else 200)
            record["status"] = status
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if state.drop_after is not None and len(state.requests) == 1:
                body = body[: state.drop_after]  # then the connection closes (HTTP/1.0)
            record["sent"] = len(body)
            if state.trickle is not None:
                for i in range(len(body)):
                    if state.stop.wait(state.trickle):  # the test is over: stop trickling
                        return
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    record["trickled"] = i + 1
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def assert_extracted(root: Path) -> None:
    assert (root / "bottle" / "train" / "good" / "002.png").read_bytes() == _png(2)
    assert dl.category_counts(root, "bottle") == COUNTS["bottle"]
    assert not (root / ARCHIVE_NAME).exists() and not (root / (ARCHIVE_NAME + ".partial")).exists()
    assert not list(root.glob(".extract-*"))


def assert_nothing_extracted(root: Path) -> None:
    assert not (root / "bottle").exists() and not list(root.glob(".extract-*"))


def test_broken_transfer_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.files[PATH] = ARCHIVE
    k = len(ARCHIVE) // 2
    server.drop_after = k
    assert download_mvtec(tmp_path, [server.url()], SHA, **FAST) == ["bottle"]
    first, second = server.requests
    assert first["range"] is None and first["sent"] == k
    assert second["range"] == f"bytes={k}-" and second["status"] == 206
    assert second["sent"] == len(ARCHIVE) - k
    assert_extracted(tmp_path)
    assert (tmp_path / "license.txt").read_bytes() == b"cc\n"


def test_server_without_range_support_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.files[PATH], server.range_support = ARCHIVE, False
    server.drop_after = len(ARCHIVE) // 3
    assert download_mvtec(tmp_path, [server.url()], SHA, **FAST) == ["bottle"]
    second = server.requests[1]
    assert second["range"] == f"bytes={len(ARCHIVE) // 3}-" and second["status"] == 200
    assert second["sent"] == len(ARCHIVE)
    assert_extracted(tmp_path)


def test_resume_at_wrong_offset_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.files[PATH], server.bad_range_start = ARCHIVE, True
    (tmp_path / (ARCHIVE_NAME + ".partial")).write_bytes(ARCHIVE[:100])
    assert download_mvtec(tmp_path, [server.url()], SHA, **FAST) == ["bottle"]
    assert [r["range"] for r in server.requests] == ["bytes=100-", None]
    assert_extracted(tmp_path)


def test_404_on_first_source_falls_back_to_second(server: Server, tmp_path: Path) -> None:
    first, second = "/first/" + ARCHIVE_NAME, "/second/" + ARCHIVE_NAME
    server.files[second] = ARCHIVE
    assert download_mvtec(tmp_path, [server.url(first), server.url(second)], SHA, **FAST) == ["bottle"]
    assert [(r["path"], r["status"]) for r in server.requests] == [(first, 404), (second, 200)]
    assert_extracted(tmp_path)


def test_all_sources_failing_is_one_line_naming_each(server: Server, tmp_path: Path) -> None:
    urls = [server.url("/a/" + ARCHIVE_NAME), server.url("/b/" + ARCHIVE_NAME)]
    with pytest.raises(DownloadError) as info:
        download_mvtec(tmp_path, urls, SHA, **FAST)
    msg = str(info.value)
    assert "\n" not in msg and all(f"{u}: HTTP 404" in msg for u in urls)
    assert len(server.requests) == 2  # an HTTP error is not retried on the same source


def test_wrong_sha256_deletes_archive_and_extracts_nothing(server: Server, tmp_path: Path) -> None:
    server.files[PATH] = ARCHIVE
    with pytest.raises(DownloadError) as info:
        download_mvtec(tmp_path, [server.url()], "0" * 64, **FAST)
    msg = str(info.value)
    assert "\n" not in msg and "sha256" in msg and "deleted" in msg and server.url() in msg
    assert_nothing_extracted(tmp_path)
    assert not (tmp_path / ARCHIVE_NAME).exists() and not (tmp_path / (ARCHIVE_NAME + ".partial")).exists()


def test_truncated_archive_is_corrupt_and_extracts_nothing(server: Server, tmp_path: Path) -> None:
    truncated = ARCHIVE[: len(ARCHIVE) // 2]
    server.files[PATH] = truncated
    with pytest.raises(DownloadError) as info:
        download_mvtec(tmp_path, [server.url()], hashlib.sha256(truncated).hexdigest(), **FAST)
    msg = str(info.value)
    assert "\n" not in msg and "corrupt" in msg and ARCHIVE_NAME in msg
    assert_nothing_extracted(tmp_path)


def test_count_mismatch_names_category_and_moves_nothing(server: Server, tmp_path: Path) -> None:
    server.files[PATH] = ARCHIVE
    with pytest.raises(DownloadError) as info:
        download_mvtec(tmp_path, [server.url()], SHA, **{**FAST, "expected_counts": {"bottle": (209, 83, 3)}})
    msg = str(info.value)
    assert "\n" not in msg and "bottle" in msg and "(3, 3, 2)" in msg and "(209, 83, 3)" in msg
    assert_nothing_extracted(tmp_path)
    assert not (tmp_path / "license.txt").exists()
    assert (tmp_path / ARCHIVE_NAME).is_file()  # kept: removed only after full success


def test_no_network_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"
    sock.close()
    with pytest.raises(DownloadError) as info:
        download_mvtec(tmp_path, [url], SHA, **FAST)
    assert "\n" not in str(info.value) and url in str(info.value) and "refused" in str(info.value)
    assert download_command(str(tmp_path / "data"), [url], None, retries=1) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0]
    assert captured.out == ""


def test_complete_archive_is_reused_without_request(server: Server, tmp_path: Path) -> None:
    server.files[PATH] = ARCHIVE
    (tmp_path / ARCHIVE_NAME).write_bytes(ARCHIVE)
    assert download_mvtec(tmp_path, [server.url()], SHA, **FAST) == ["bottle"]
    assert server.requests == []
    assert_extracted(tmp_path)


def test_partial_from_earlier_run_is_continued(server: Server, tmp_path: Path) -> None:
    server.files[PATH] = ARCHIVE
    k = len(ARCHIVE) // 3
    (tmp_path / (ARCHIVE_NAME + ".partial")).write_bytes(ARCHIVE[:k])
    assert download_mvtec(tmp_path, [server.url()], SHA, **FAST) == ["bottle"]
    assert len(server.requests) == 1 and server.requests[0]["range"] == f"bytes={k}-"
    assert server.requests[0]["sent"] == len(ARCHIVE) - k
    assert_extracted(tmp_path)


def test_existing_category_is_left_alone(server: Server, tmp_path: Path) -> None:
    server.files[PATH] = ARCHIVE
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    (tmp_path / "bottle" / "mine.txt").write_text("keep")
    assert download_mvtec(tmp_path, [server.url()], SHA, **FAST) == ["bottle"]
    assert (tmp_path / "bottle" / "mine.txt").read_text() == "keep"
    assert not (tmp_path / "bottle" / "test").exists() and not list(tmp_path.glob(".extract-*"))


def test_disk_full_is_one_line_error(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files[PATH] = ARCHIVE

    class Full(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path: Path, mode: str = "r") -> io.IOBase:  # the partial is opened "wb"/"ab", the archive "rb"
        return Full() if mode in ("wb", "ab") else open(path, mode)

    monkeypatch.setattr(dl, "open", full_open, raising=False)
    with pytest.raises(DownloadError) as info:
        download_mvtec(tmp_path, [server.url()], SHA, **FAST)
    assert "\n" not in str(info.value) and str(info.value).startswith("disk full while writing")
    assert len(server.requests) == 1  # not retried, no other source tried
    assert_nothing_extracted(tmp_path)


def test_download_command_uses_given_url_and_sha(server: Server, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    widget = make_archive("widget")  # not an official name: the default counts do not apply
    server.files["/mirror.tar.gz"] = widget
    url = server.url("/mirror.tar.gz")
    assert download_command(str(tmp_path), [url], hashlib.sha256(widget).hexdigest(), retries=1) == 0
    assert "widget" in capsys.readouterr().err
    assert [r["path"] for r in server.requests] == ["/mirror.tar.gz"]
    assert (tmp_path / "widget" / "test" / "contamination" / "000.png").is_file()


def test_a_stalled_transfer_ends_with_one_line_and_keeps_the_partial(server: Server, tmp_path: Path) -> None:
    import time

    server.files[PATH], server.trickle = ARCHIVE, 0.1  # headers, then 1 byte every 0.1 s: never a socket timeout
    result: list[BaseException | list[str]] = []
    fast = {**FAST, "stall": (0.6, 100)}  # at least 100 bytes every 0.6 s

    def attempt() -> None:
        try:
            result.append(download_mvtec(tmp_path, [server.url()], SHA, **fast))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            result.append(exc)

    t0 = time.monotonic()
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the download hung on a trickling server"
    (error,) = result
    assert isinstance(error, DownloadError) and "\n" not in str(error) and "stalled" in str(error), error
    assert time.monotonic() - t0 < 10 and len(server.requests) == 2  # each attempt ends after about 0.6 s
    partial = tmp_path / (ARCHIVE_NAME + ".partial")
    assert 0 < partial.stat().st_size < len(ARCHIVE)  # kept for a resume
    assert server.requests[1]["range"].startswith("bytes=") and server.requests[1]["range"] != "bytes=0-"  # resumed
