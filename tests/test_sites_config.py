"""Sites config: every error one line naming its key path, exit status 2, at check-config and at serve;
the routing table check-config prints; and the pieces (path normal form, location choice, rate limiter)
on their own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import re2

from ring3.config.site_loader import compile_regex
from ring3.sites.paths import LocationTable, normalize
from ring3.sites.ratelimit import RateLimiter


def run(command: str, tmp_path: Path, toml: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ring3.toml"
    path.write_text(textwrap.dedent(toml))
    args = [sys.executable, "-m", "ring3", command]
    if command == "serve":
        args += ["--config", str(path), "--listen", "127.0.0.1:0"]
    else:
        args.append(str(path))
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


ERRORS = [
    ("""
     [[site]]
     hosts = ["a.test"]
     respond = { body = "a" }
     [[site]]
     hosts = ["b.test"]
       [[site.location]]
       path = "/login"
       respond = { body = "x" }
       rate_limit = { rate = "five per second" }
     """, "site[2].location[1].rate_limit.rate", "'5/s'"),
    ("""
     [[site]]
     hosts = ["a.test"]
     respond = { body = "a" }
     [[site]]
     hosts = ["A.test"]
     respond = { body = "b" }
     """, "site[2].hosts", "claimed by site[1]"),
    ("""
     [[site]]
     hosts = ["*"]
       [[site.location]]
       path = "~ ^/(unclosed"
       respond = { body = "x" }
     """, "site[1].location[1].path", "does not compile"),
    ("""
     [[site]]
     hosts = ["*"]
       [[site.location]]
       path = "~ ^/(a)\\\\1$"
       respond = { body = "x" }
     """, "site[1].location[1].path", "does not compile"),  # a backreference: not linear, not RE2
    ("""
     [[site]]
     hosts = ["*"]
     auth = { htpasswd = "/nonexistent/users.htpasswd" }
     respond = { body = "x" }
     """, "site[1].auth.htpasswd", "/nonexistent/users.htpasswd"),
    ("""
     [[site]]
     hosts = ["*"]
       [[site.location]]
       path = "/x/"
       respond = { body = "x" }
       redirect = "/y/"
     """, "site[1].location[1].redirect", "one handler"),
    ("""
     [[site]]
     hosts = ["*"]
     respond = { body = "x" }
       [[site.location]]
       path = "/x/"
       rate_limt = { rate = "1/s" }
     """, "site[1].location[1].rate_limt", "did you mean 'rate_limit'"),
    ("""
     [[site]]
     hostz = ["a.test"]
     """, "site[1].hostz", "did you mean 'hosts'"),
    ("""
     [[site]]
     hosts = ["*"]
     respond = { body = "x", staus = 200 }
     """, "site[1].respond.staus", "did you mean 'status'"),
    ("""
     [[site]]
     hosts = ["*"]
     root = "/nonexistent/dir"
     """, "site[1].root", "not a directory"),
    ("""
     [[site]]
     hosts = ["*"]
       [[site.location]]
       path = "/x/"
     """, "site[1].location[1]", "no handler"),
    ("""
     [[site]]
     hosts = ["*"]
     respond = { body = "x" }
     allow = ["10.0.0.0/33"]
     """, "site[1].allow", "CIDR"),
    ("""
     [[site]]
     hosts = ["bad host!"]
     respond = { body = "x" }
     """, "site[1].hosts", "not a host name"),
    ("""
     [[site]]
     hosts = ["*"]
     respond = { body = "x" }
     proxy = "http://127.0.0.1:9000"
     """, "site[1].proxy", "a location has one handler, and respond is given too"),
    ("""
     [[site]]
     hosts = ["*"]
     respond = { body = "x" }
     rewrite = ["^/a$"]
     """, "site[1].rewrite[1]", "REGEX REPLACEMENT"),
    ("""
     [[site]]
     hosts = ["*"]
     respond = { body = "x" }
     error_pages = { 700 = "/x.html" }
     """, "site[1].error_pages.700", "from 300 to 599"),
    ("""
     [[site]]
     hosts = ["a.test"]
     tls = { cert = "/nonexistent/a.pem", key = "/nonexistent/a.key" }
     respond = { body = "x" }
     """, "site[1].tls.cert", "cannot be read"),
    ("""
     [[site]]
     hosts = ["*"]
     respond = { body = "x" }
     headers = { "Content-Length" = "3" }
     """, "site[1].headers.Content-Length", "framing field"),
    ("""
     [static]
     root = "/"
     [[site]]
     hosts = ["a.test", "*"]
     respond = { body = "x" }
     """, "site[1].hosts", "keep one"),
    ("""
     [serve]
     listen = ["127.0.0.1:0"]
     """, "serve", "unknown section"),
    ("""
     [server]
     acess_log = "off"
     """, "server.acess_log", "did you mean 'access_log'"),
]


@pytest.mark.parametrize(("toml", "key", "reason"), ERRORS, ids=[key for _, key, _ in ERRORS])
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_bad_sites_config_is_one_line_naming_the_key(tmp_path: Path, command: str, toml: str, key: str,
                                                      reason: str) -> None:
    done = run(command, tmp_path, toml)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ring3: config error: ")
    assert f": {key}: " in lines[0], lines[0]
    assert reason in lines[0], lines[0]


def test_check_config_prints_the_routing_table(tmp_path: Path, site: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")
    done = run("check-config", tmp_path, f"""
        [[site]]
        hosts = ["example.test", "*.example.test"]
        root = "{site}"
          [[site.location]]
          path = "/admin/"
          auth = {{ htpasswd = "{users}" }}
          [[site.location]]
          path = "= /ping"
          respond = {{ body = "pong" }}
          [[site.location]]
          path = "~* \\\\.php$"
          respond = {{ status = 403 }}
        [[site]]
        hosts = ["*"]
        redirect = "https://example.test$request_uri"
    """)
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("# routing", 1)[1]
    assert "# site[1]: example.test, *.example.test" in table
    assert f"root {site}  [auth {users}]    (site[1].location[1])" in table
    assert "= /ping" in table and "respond 200" in table
    assert "~* \\.php$" in table and "(site[1].location[3])" in table
    assert "# site[2]: * (default)" in table
    assert "redirect 301 https://example.test$request_uri" in table
    # the lines above the table are the TOML of the flat sections, and still load
    assert "[server]" in done.stdout.split("# routing", 1)[0]


def test_normal_form_of_paths() -> None:
    assert normalize(b"/plain/path.txt") == b"/plain/path.txt"
    assert normalize(b"/%61dmin/%7Euser/") == b"/admin/~user/"
    assert normalize(b"//a///b") == b"/a/b"
    assert normalize(b"/a%2fb%2Fc") == b"/a%2Fb%2Fc"  # an encoded slash stays one, not a separator
    assert normalize(b"/caf%c3%a9") == b"/caf%C3%A9"
    assert normalize(b"/a%20b") == b"/a%20b"
    assert normalize(b"/.well-known/x") == b"/.well-known/x"
    for refused in (b"/a/../b", b"/a/%2e%2e/b", b"/a/.", b"/%2E/", b"/a%00", b"/a%zz", b"/a%4", b"/a/.%2e"):
        assert normalize(refused) is None, refused


def test_location_choice_without_a_server() -> None:
    table: LocationTable[str] = LocationTable()
    for kind, pattern, name in [("prefix", "/", "root"), ("prefix", "/a/", "a"), ("prefix", "/a/b/", "ab"),
                                ("stop", "/s/", "stop"), ("regex", r"\.png$", "png"),
                                ("exact", "/a/b/", "exact"), ("iregex", r"^/A/", "ire")]:
        table.add(kind, pattern, name, compile_regex)
    assert table.match(b"/a/b/") == "exact"
    assert table.match(b"/a/b/c") == "ire"  # a regex beats the longest prefix
    assert table.match(b"/s/x.png") == "stop"
    assert table.match(b"/x.png") == "png"
    assert table.match(b"/z") == "root"
    for _ in range(2):  # remembered, and the same answer
        assert table.match(b"/a/b/c") == "ire"


def test_rate_limiter_buckets_and_bounded_state() -> None:
    limiter = RateLimiter(rate=2.0, burst=3, max_keys=100)
    now = 1000.0
    assert [limiter.take(b"k", now) for _ in range(4)] == [0.0] * 4
    wait = limiter.take(b"k", now)
    assert wait == pytest.approx(0.5)
    assert limiter.take(b"k", now + 0.5) == 0.0  # one drained: one more goes
    many = RateLimiter(rate=1.0, burst=0, max_keys=50)
    for n in range(10_000):
        many.take(b"client-%d" % n, now)
    assert len(many) == 50


def test_regexes_are_re2() -> None:
    pattern = compile_regex(r"^/(a+)+$")
    assert isinstance(pattern, re2._Regexp)
    assert pattern.search(b"/" + b"a" * 100_000 + b"b") is None
