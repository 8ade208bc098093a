"""Path traversal over raw sockets: nothing outside the root is ever served.

Requests are written byte for byte, so no client library normalises `..`, percent-escapes or backslashes
before the server sees them.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningServer, exchange

Start = Callable[..., RunningServer]


@pytest.fixture
def secret(tmp_path: Path, site: Path) -> bytes:
    """A file next to the site root, outside it, with an unguessable content."""
    token = f"TOP-SECRET-{secrets.token_hex(16)}\n".encode()
    (tmp_path / "secret").write_bytes(token)
    assert (site.parent / "secret").read_bytes() == token
    return token


def fetch(server: RunningServer, target: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    with server.connect(timeout=5.0) as sock:
        return exchange(sock, b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n\r\n")


TRAVERSALS: list[tuple[bytes, int]] = [
    (b"/../secret", 400),  # climbs above the root
    (b"/%2e%2e/secret", 400),  # climbs after decoding
    (b"/%2E%2E/secret", 400),
    (b"/.%2e/secret", 400),
    (b"/sub/../../secret", 400),
    (b"/./././../secret", 400),
    (b"/%252e%252e/secret", 404),  # decoded once: a directory literally named "%2e%2e"
    (b"/..%2fsecret", 400),  # encoded separator
    (b"/..%2Fsecret", 400),
    (b"/sub/..%2f..%2fsecret", 400),
    (b"/%2fetc/passwd", 400),
    (b"/..\\secret", 400),  # backslash
    (b"/%5c..%5csecret", 400),  # encoded backslash
    (b"/%c0%ae%c0%ae/secret", 400),  # overlong UTF-8 for '.'
    (b"/%c0%af..%c0%afsecret", 400),  # overlong UTF-8 for '/'
    (b"/hello.txt%00.html", 400),  # NUL
    (b"/hello.txt.", 404),  # trailing dot is another (missing) name here
    (b"/hello.txt%20", 404),  # so is a trailing space
    (b"//etc/passwd", 404),  # root-relative: <root>/etc/passwd, which does not exist
    (b"///secret", 404),
]


@pytest.mark.parametrize(("target", "expected"), TRAVERSALS, ids=[t.decode() for t, _ in TRAVERSALS])
def test_traversal_refused(served: RunningServer, secret: bytes, target: bytes, expected: int) -> None:
    status, _, body = fetch(served, target)
    assert status == expected, (target, status, body[:200])
    assert secret not in body
    assert b"TOP-SECRET" not in body
    assert b"root:" not in body


@pytest.mark.parametrize(("target", "expected"), TRAVERSALS, ids=[t.decode() for t, _ in TRAVERSALS])
def test_traversal_refused_through_variant_lookups(served: RunningServer, secret: bytes, site: Path,
                                                   tmp_path: Path, target: bytes, expected: int) -> None:
    """The same cases when a precompressed variant lies beside the secret, and beside files in the root
    named like the secret (the lookup must never be a way out)."""
    for suffix in (".gz", ".br", ".zst"):
        (tmp_path / f"secret{suffix}").write_bytes(secret)  # outside the root, beside the secret
        (site / f"hello.txt{suffix}").symlink_to(tmp_path / "secret")  # inside, leading out
    with served.connect(timeout=5.0) as sock:
        status, headers, body = exchange(
            sock, b"GET " + target + b" HTTP/1.1\r\nHost: test\r\nAccept-Encoding: br, zstd, gzip\r\n\r\n")
    assert status == expected, (target, status, body[:200])
    assert b"TOP-SECRET" not in body and b"content-encoding" not in headers
    # and the plain file beside symlinked variants is served as itself
    with served.connect(timeout=5.0) as sock:
        status, headers, body = exchange(
            sock, b"GET /hello.txt HTTP/1.1\r\nHost: test\r\nAccept-Encoding: br, zstd, gzip\r\n\r\n")
    assert (status, body) == (200, b"hello, world\n") and b"content-encoding" not in headers


def test_dot_dot_inside_root_still_works(served: RunningServer) -> None:
    """Control: `..` that stays inside the root resolves lexically, so the refusals above are specific."""
    status, _, body = fetch(served, b"/sub/../hello.txt")
    assert status == 200
    assert body == b"hello, world\n"
    status, _, body = fetch(served, b"/sub/./index.html")
    assert status == 200
    assert body == b"<p>sub</p>\n"


def test_dotfiles_refused(served: RunningServer, site: Path) -> None:
    (site / ".git").mkdir()
    (site / ".git" / "config").write_text("[core]\n")
    for target in (b"/.secret", b"/%2esecret", b"/.git/config", b"/sub/../.secret"):
        status, _, body = fetch(served, target)
        assert status == 403, target
        assert b"do not serve" not in body
        assert b"[core]" not in body


def test_symlink_to_etc_refused(served: RunningServer, site: Path) -> None:
    (site / "etc-link").symlink_to("/etc")
    for target in (b"/etc-link/passwd", b"/etc-link/", b"/etc-link", b"/sub/../etc-link/passwd"):
        status, _, body = fetch(served, target)
        assert status == 403, (target, status)
        assert b"root:" not in body


def test_symlink_to_outside_file_refused(served: RunningServer, site: Path, secret: bytes) -> None:
    (site / "secret-link.txt").symlink_to(site.parent / "secret")
    status, _, body = fetch(served, b"/secret-link.txt")
    assert status == 403
    assert secret not in body


def outside_dir(tmp_path: Path) -> tuple[Path, bytes]:
    outside = tmp_path / "outside"
    outside.mkdir()
    known = f"known file outside the root {secrets.token_hex(8)}\n".encode()
    (outside / "known.txt").write_bytes(known)
    return outside, known


def test_symlink_outside_refused_by_default(served: RunningServer, site: Path, tmp_path: Path) -> None:
    outside, known = outside_dir(tmp_path)
    (site / "out-link").symlink_to(outside)
    status, _, body = fetch(served, b"/out-link/known.txt")
    assert status == 403
    assert known not in body


def test_symlink_outside_followed_with_flag(site: Path, tmp_path: Path, ring3_process: Start,
                                           secret: bytes) -> None:
    outside, known = outside_dir(tmp_path)
    (site / "out-link").symlink_to(outside)
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--follow-symlinks-outside-root")
    status, headers, body = fetch(server, b"/out-link/known.txt")
    assert status == 200
    assert body == known
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    # The flag is about symlinks only: climbing with `..` is still refused.
    for target in (b"/../secret", b"/%2e%2e/secret", b"/out-link/../../secret"):
        status, _, body = fetch(server, target)
        assert status == 400, target
        assert secret not in body
    assert server.stop() == 0


def test_symlink_loop_self(served: RunningServer, site: Path) -> None:
    (site / "loop").symlink_to(".")
    # A few levels stay inside the root and resolve; enough of them exceed the kernel's symlink limit.
    status, _, body = fetch(served, b"/loop/loop/hello.txt")
    assert status == 200
    assert body == b"hello, world\n"
    status, _, body = fetch(served, b"/" + b"loop/" * 60 + b"hello.txt")
    assert status == 404, body[:200]


def test_symlink_loop_pair(served: RunningServer, site: Path) -> None:
    (site / "a").symlink_to("b")
    (site / "b").symlink_to("a")
    for target in (b"/a", b"/a/", b"/b/x", b"/a/b/a/b"):
        status, _, body = fetch(served, target)
        assert status == 404, (target, status, body[:200])


def test_server_alive_after_attacks(served: RunningServer) -> None:
    for target, _ in TRAVERSALS:
        fetch(served, target)
    status, _, body = fetch(served, b"/hello.txt")
    assert status == 200
    assert body == b"hello, world\n"
    assert served.stop() == 0
    assert "Traceback" not in served.stderr()


def test_curl_path_as_is(served: RunningServer, secret: bytes) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is required"
    for path in ("/../../etc/passwd", "/../secret", "/sub/../../secret"):
        result = subprocess.run(
            [curl, "--path-as-is", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10",
             served.url + path],
            capture_output=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        body, _, code = result.stdout.rpartition(b"\n")
        assert code != b"200", path
        assert code == b"400", (path, code)
        assert secret not in body
        assert b"root:" not in body
