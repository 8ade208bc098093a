"""Sites over real sockets: the issue's example config as written, hosts, location precedence, handlers,
rewrites, try_files and alias traversal."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningServer, http_client
from sites_kit import htpasswd, request, serve_config, write_app

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def trees(tmp_path: Path) -> Path:
    """Directories for the example: a site, a built assets tree, a single-page app, and a secret beside."""
    (tmp_path / "example" / "new").mkdir(parents=True)
    (tmp_path / "example" / "index.html").write_text("example home\n")
    (tmp_path / "example" / "new" / "index.html").write_text("the new place\n")
    (tmp_path / "build" / "assets").mkdir(parents=True)
    (tmp_path / "build" / "assets" / "app.js").write_text("console.log(1)\n")
    (tmp_path / "build" / "secret.txt").write_text("outside the alias\n")
    (tmp_path / "spa" / "about").mkdir(parents=True)
    (tmp_path / "spa" / "index.html").write_text("spa shell\n")
    (tmp_path / "spa" / "about" / "index.html").write_text("about page\n")
    (tmp_path / "spa" / "logo.svg").write_text("<svg/>\n")
    write_app(tmp_path / "apps")
    htpasswd(tmp_path / "admin.htpasswd", "alice", "wonderland")
    return tmp_path


def example_config(t: Path) -> str:
    """The issue's example, as written, with this test's directories."""
    return f"""
    [server]
    listen = ["127.0.0.1:8080"]
    access_log = "off"

    [app]
    app_dir = "{t}/apps"

    [[site]]
    hosts = ["example.test", "www.example.test"]   # exact names, "*.example.test" wildcards, "~regex"
    root = "{t}/example"                           # keys at site level act as its "/" location

      [[site.location]]
      path = "/old/"                               # prefix (longest wins); "= /x" exact; "~ re"; "~* re"
      redirect = "/new/"                           # 301 by default; status = 302 | 307 | 308

      [[site.location]]
      path = "/app/"
      app = "mysite.asgi:application"

      [[site.location]]
      path = "/admin/"
      app = "mysite.asgi:application"
      auth = {{ htpasswd = "{t}/admin.htpasswd", realm = "admin" }}
      allow = ["127.0.0.1", "10.0.0.0/8"]          # others get 403

      [[site.location]]
      path = "/assets/"
      alias = "{t}/build/assets/"                  # nginx's alias: the prefix replaced by this directory
      headers = {{ "cache-control" = "public, max-age=31536000, immutable" }}

      [[site.location]]
      path = "/login"
      app = "mysite.asgi:application"
      rate_limit = {{ rate = "5/s", burst = 10, key = "client" }}   # beyond the burst: 429

    [[site]]
    hosts = ["spa.test"]
    root = "{t}/spa"
    try_files = ["$uri", "$uri/", "/index.html"]   # a single-page app's fallback

    [[site]]
    hosts = ["*"]                                  # the default site: any other Host
    respond = {{ status = 404, body = "no such site\\n" }}
    """


@pytest.fixture
def example(trees: Path, ring3_process: Callable[..., RunningServer]) -> RunningServer:
    return serve_config(ring3_process, trees, example_config(trees))


def curl(server: RunningServer, url: str, *options: str) -> tuple[int, str]:
    """curl with --resolve for the example's names; (status, body)."""
    resolve = [part for name in ("example.test", "www.example.test", "spa.test", "nowhere.test")
               for part in ("--resolve", f"{name}:{server.port}:127.0.0.1")]
    done = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *resolve, *options,
                           url.replace("PORT", str(server.port))],
                          capture_output=True, text=True, timeout=30, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_the_issue_example_works_as_written(example: RunningServer) -> None:
    assert curl(example, "http://example.test:PORT/") == (200, "example home\n")
    assert curl(example, "http://www.example.test:PORT/") == (200, "example home\n")
    status, _ = curl(example, "http://example.test:PORT/old/page", "-D", "-")
    assert status == 301
    status, body = curl(example, "http://example.test:PORT/old/page", "-L")
    assert (status, body) == (200, "the new place\n")
    status, body = curl(example, "http://example.test:PORT/app/items/7")
    assert status == 200 and json.loads(body)["path"] == "/app/items/7"  # the app sees the whole path
    assert curl(example, "http://example.test:PORT/admin/panel")[0] == 401
    assert curl(example, "http://example.test:PORT/admin/panel", "-u", "alice:wrong")[0] == 401
    status, body = curl(example, "http://example.test:PORT/admin/panel", "-u", "alice:wonderland")
    assert status == 200 and json.loads(body)["path"] == "/admin/panel"
    status, head = curl(example, "http://example.test:PORT/assets/app.js", "-I")
    assert status == 200 and "cache-control: public, max-age=31536000, immutable" in head.lower()
    assert curl(example, "http://example.test:PORT/assets/app.js") == (200, "console.log(1)\n")
    assert curl(example, "http://spa.test:PORT/") == (200, "spa shell\n")
    assert curl(example, "http://spa.test:PORT/deep/client/route") == (200, "spa shell\n")
    assert curl(example, "http://spa.test:PORT/logo.svg") == (200, "<svg/>\n")
    assert curl(example, "http://spa.test:PORT/about") == (200, "about page\n")  # $uri/ serves its index
    assert curl(example, "http://nowhere.test:PORT/") == (404, "no such site\n")
    assert curl(example, "http://127.0.0.1:PORT/anything") == (404, "no such site\n")


def test_the_example_rate_limit_refuses_past_the_burst(example: RunningServer) -> None:
    statuses = [request(example, "/login")[0] for _ in range(11)]
    assert statuses == [200] * 11  # the request at the rate, then the burst of 10
    status, headers, _ = request(example, "/login")
    assert status == 429
    assert int(headers[b"retry-after"]) >= 1
    assert request(example, "/login", source="127.0.0.2")[0] == 200  # another client has its own bucket


def test_the_example_admin_allows_only_its_networks(example: RunningServer) -> None:
    good = {"Authorization": "Basic YWxpY2U6d29uZGVybGFuZA=="}  # alice:wonderland
    assert request(example, "/admin/", headers=good)[0] == 200
    # the same bytes from another loopback address: refused, never replayed
    assert request(example, "/admin/", headers=good, source="127.0.0.3")[0] == 403
    assert request(example, "/admin/", headers=good)[0] == 200


def test_hosts_match_exact_then_wildcard_then_regex_then_default(
        tmp_path: Path, ring3_process: Callable[..., RunningServer]) -> None:
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["api.example.test"]
        respond = { body = "exact" }
        [[site]]
        hosts = ["*.example.test"]
        respond = { body = "wildcard" }
        [[site]]
        hosts = ["*.eu.example.test"]
        respond = { body = "longer wildcard" }
        [[site]]
        hosts = ["~^app[0-9]+\\\\.test$"]
        respond = { body = "regex" }
        [[site]]
        hosts = ["::1"]
        respond = { body = "v6" }
        [[site]]
        hosts = ["*"]
        respond = { status = 404, body = "default" }
    """)
    for host, body in [("api.example.test", b"exact"), ("API.Example.Test:8080", b"exact"),
                       ("api.example.test.", b"exact"), ("www.example.test", b"wildcard"),
                       ("a.b.example.test", b"wildcard"), ("x.eu.example.test", b"longer wildcard"),
                       ("app12.test", b"regex"), ("APP3.TEST", b"regex"), ("example.test", b"default"),
                       ("app.test", b"default"), ("127.0.0.1", b"default"), ("[::1]:80", b"v6"),
                       ("[::2]", b"default")]:
        assert request(server, "/", host)[2] == body, host
    # HTTP/1.0 without Host: the default site; HTTP/1.1 without Host, or with a bad one: 400
    assert request(server, "/", None, version="1.0")[2] == b"default"
    assert request(server, "/", None)[0] == 400
    assert request(server, "/", "bad host")[0] == 400
    assert request(server, "/", "exa_mple/test")[0] == 400
    # an absolute-form target names the host, whatever Host says (RFC 9112 3.2.2)
    assert request(server, "http://api.example.test/x", "www.example.test")[2] == b"exact"


def test_locations_follow_nginx_precedence(tmp_path: Path,
                                          ring3_process: Callable[..., RunningServer]) -> None:
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        respond = { body = "root prefix" }
          [[site.location]]
          path = "= /exact"
          respond = { body = "exact" }
          [[site.location]]
          path = "/exact"
          respond = { body = "prefix of exact" }
          [[site.location]]
          path = "/images/"
          respond = { body = "images prefix" }
          [[site.location]]
          path = "^~ /static/"
          respond = { body = "static stops regex" }
          [[site.location]]
          path = "~ \\\\.png$"
          respond = { body = "png regex" }
          [[site.location]]
          path = "~* \\\\.(gif|jpe?g)$"
          respond = { body = "image regex, any case" }
          [[site.location]]
          path = "~ ^/images/.*\\\\.jpg$"
          respond = { body = "later regex" }
    """)
    cases = {
        "/exact": b"exact", "/exact/more": b"prefix of exact", "/exactly": b"prefix of exact",
        "/images/a.txt": b"images prefix", "/images/a.png": b"png regex",
        "/images/a.JPG": b"image regex, any case", "/images/a.jpg": b"image regex, any case",
        "/static/a.png": b"static stops regex", "/other.png": b"png regex", "/other": b"root prefix",
        "/": b"root prefix",
    }
    for path, body in cases.items():
        assert request(server, path)[2] == body, path


def test_paths_are_matched_normalised_and_dot_segments_refused(
        trees: Path, example: RunningServer) -> None:
    # an encoded letter does not dodge the /admin/ location and its password
    assert request(example, "/%61dmin/")[0] == 401
    assert request(example, "//admin//x")[0] == 401
    assert request(example, "/%41dmin/")[0] == 404  # paths are case-sensitive: that is /Admin/
    for target in ["/app/../admin/", "/app/%2e%2e/admin/", "/app/.%2E/admin/", "/./admin/", "/app/.",
                   "/assets/%2E%2e/secret.txt", "/a%00b", "/a%zzb", "/a%2"]:
        assert request(example, target)[0] == 400, target


def test_alias_cannot_be_climbed_out_of(tmp_path: Path, ring3_process: Callable[..., RunningServer]) -> None:
    """nginx's classic: `location /img` with `alias /data/images/` serves /data/secret for /img../secret.
    Here no spelling reaches outside the alias, through try_files and rewrites too."""
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    (images / "cat.png").write_text("cat\n")
    (tmp_path / "data" / "secret").write_text("SECRET\n")
    (tmp_path / "data" / "imagesecret").write_text("SECRET\n")
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        respond = {{ status = 404, body = "none" }}
          [[site.location]]
          path = "/img"
          alias = "{images}/"
          [[site.location]]
          path = "/tried/"
          alias = "{images}/"
          try_files = ["$uri", "/img$uri"]
          [[site.location]]
          path = "/re/"
          rewrite = ["^/re/(.*)$ /img/$1 last"]
          respond = {{ body = "not rewritten" }}
    """)
    assert request(server, "/img/cat.png")[2] == b"cat\n"
    assert request(server, "/imgcat.png")[2] == b"cat\n"  # as nginx: the prefix replaced by the alias
    spellings = ["/img../secret", "/img..%2fsecret", "/img%2e%2e/secret", "/img%2E%2E/secret",
                 "/img/../secret", "/img/..%2fsecret", "/img/%2e%2e/secret", "/img..\\secret",
                 "/img%2e%2e%2fsecret", "/img/..%5csecret", "/img/....//secret", "/img/.%2e/secret",
                 "/img/../../data/secret", "/img%252e%252e/secret", "/img..", "/img/..", "/imgsecret",
                 "/tried/../secret", "/tried/..%2fsecret", "/tried/%2e%2e/secret",
                 "/re/../secret", "/re/..%2fsecret", "/re/%2e%2e/secret", "/re/..", "/re/%2e%2e%2fsecret"]
    for target in spellings:
        status, _, body = request(server, target)
        assert b"SECRET" not in body and status in (400, 403, 404), (target, status, body)


def test_rewrites_redirects_and_fixed_answers(tmp_path: Path, ring3_process: Callable[..., RunningServer],
                                              protocol: str) -> None:
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        respond = { body = "fallback" }
        rewrite = ["^/legacy/(.*)$ /modern/$1 last"]
          [[site.location]]
          path = "/modern/"
          respond = { status = 201, body = "modern", content_type = "text/x-modern" }
          [[site.location]]
          path = "/u/"
          rewrite = ["^/u/([0-9]+)$ /users?id=$1 last", "^/u/old/(.*)$ /new/$1 permanent",
                     "^/u/tmp/(.*)$ https://elsewhere.test/$1 redirect", "^/u/(.*)$ /u-kept/$1 break"]
          respond = { body = "u location" }
          [[site.location]]
          path = "= /users"
          respond = { body = "users" }
          [[site.location]]
          path = "/loop/"
          rewrite = ["^/loop/(.*)$ /loop/$1 last"]
          respond = { body = "never" }
          [[site.location]]
          path = "/go/"
          redirect = "https://$host/to$uri?$args"
          status = 308
          [[site.location]]
          path = "~ ^/item/([0-9]+)/(.*)$"
          redirect = "/items/$2/$1"
          status = 302
          [[site.location]]
          path = "/abs/"
          rewrite = ["^/abs/(.*)$ https://cdn.test/$1", "^/abs2/(.*)$ $scheme://cdn.test/$1 permanent"]
          respond = { body = "never" }
          [[site.location]]
          path = "/abs2/"
          rewrite = ["^/abs2/(.*)$ $scheme://cdn.test/$1 permanent"]
          respond = { body = "never" }
    """)
    with http_client(server.url, protocol, follow_redirects=False) as client:
        assert client.get("/legacy/x").text == "modern"  # the site-level rewrite, before any location
        answer = client.get("/modern/y")
        assert (answer.status_code, answer.headers["content-type"]) == (201, "text/x-modern")
        assert client.get("/u/42").text == "users"
        answer = client.get("/u/old/page?q=1")
        assert (answer.status_code, answer.headers["location"]) == (301, "/new/page?q=1")
        answer = client.get("/u/tmp/a")
        assert (answer.status_code, answer.headers["location"]) == (302, "https://elsewhere.test/a")
        assert client.get("/u/anything").text == "u location"  # break: stays in the location
        assert client.get("/loop/x").status_code == 500  # ten internal redirects at most
        answer = client.get("/go/page", params={"a": "1"}, headers={"host": "Shop.Test:8080"})
        assert (answer.status_code, answer.headers["location"]) == (308, "https://shop.test/to/go/page?a=1")
        answer = client.get("/item/7/blue")
        assert (answer.status_code, answer.headers["location"]) == (302, "/items/blue/7")
        # a replacement that is a URL redirects, as in nginx (302, or 301 with permanent)
        answer = client.get("/abs/x.css")
        assert (answer.status_code, answer.headers["location"]) == (302, "https://cdn.test/x.css")
        answer = client.get("/abs2/y")
        assert (answer.status_code, answer.headers["location"]) == (301, "http://cdn.test/y")


def test_legacy_flags_are_the_default_site(site: Path, tmp_path: Path,
                                           ring3_process: Callable[..., RunningServer]) -> None:
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["named.test"]
        respond = { body = "named" }
    """, str(site))
    assert request(server, "/", "named.test")[2] == b"named"
    assert request(server, "/hello.txt", "other.test")[2] == b"hello, world\n"


def test_the_first_site_is_the_default_without_one(tmp_path: Path,
                                                   ring3_process: Callable[..., RunningServer]) -> None:
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["first.test"]
        respond = { body = "first" }
        [[site]]
        hosts = ["second.test"]
        respond = { body = "second" }
    """)
    assert request(server, "/", "second.test")[2] == b"second"
    assert request(server, "/", "unknown.test")[2] == b"first"


def test_pathological_regex_costs_linear_time(tmp_path: Path,
                                             ring3_process: Callable[..., RunningServer]) -> None:
    """(a+)+$ takes a backtracking engine exponential time on 'aaa...b'; RE2 answers at once. The test's
    timeout is what fails if a backtracking engine were matching."""
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        respond = { body = "prefix" }
          [[site.location]]
          path = "~ ^/(a+)+$"
          respond = { body = "regex" }
    """)
    assert request(server, "/" + "a" * 4000)[2] == b"regex"
    for _ in range(20):
        assert request(server, "/" + "a" * 4000 + "b")[2] == b"prefix"


def test_static_keys_and_applications_per_location(site: Path, tmp_path: Path,
                                                   ring3_process: Callable[..., RunningServer]) -> None:
    """index and dotfiles per location, $scheme, and a WebSocket through a location's application with the
    site's header rules on (the 101 passes them)."""
    from websockets.sync.client import connect

    (site / "sub" / "home.html").write_text("sub home\n")
    examples = Path(__file__).resolve().parent.parent / "examples"
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [app]
        app_dir = "{examples}/fastapi_app"
        [[site]]
        hosts = ["*"]
        root = "{site}"
        headers = {{ "x-frame-options" = "DENY" }}
          [[site.location]]
          path = "/sub/"
          index = ["home.html"]
          [[site.location]]
          path = "/hidden/"
          alias = "{site}/"
          dotfiles = true
          [[site.location]]
          path = "= /ws"
          app = "main:app"
          [[site.location]]
          path = "/where"
          redirect = "$scheme://$host/elsewhere"
          status = 307
    """)
    assert request(server, "/sub/")[2] == b"sub home\n"
    assert request(server, "/.secret")[0] == 403
    assert request(server, "/hidden/.secret")[2] == b"do not serve\n"
    status, headers, _ = request(server, "/where", "Example.test:99")
    assert (status, headers[b"location"]) == (307, b"http://example.test/elsewhere")
    with connect(server.url.replace("http", "ws") + "/ws", open_timeout=10) as socket_:
        socket_.send("ping")
        assert socket_.recv(10) == "echo: ping"
        assert socket_.response.headers["x-frame-options"] == "DENY"


def test_listing_and_compression_per_location(site: Path, tmp_path: Path,
                                              ring3_process: Callable[..., RunningServer]) -> None:
    import gzip as gzip_module

    (site / "big.css").write_bytes(b"body { color: red }\n" * 200)
    (site / "files").mkdir()
    (site / "files" / "a.txt").write_text("a\n")
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        root = "{site}"
          [[site.location]]
          path = "/browse/"
          alias = "{site}/"
          listing = true
          compress = false
          [[site.location]]
          path = "/gz/"
          alias = "{site}/"
          compress_encodings = ["gzip"]
    """)
    # the site's own location: no listing (403), compression on
    assert request(server, "/empty-dir/")[0] == 403
    deadline = 50
    while True:
        status, headers, body = request(server, "/big.css", headers={"Accept-Encoding": "gzip"})
        if b"content-encoding" in headers:
            break
        deadline -= 1
        assert deadline, "compressed within 50 requests"
        time.sleep(0.05)  # compressed in a worker thread after the cache admits the file
    assert gzip_module.decompress(body) == (site / "big.css").read_bytes()
    # the /browse/ location: a listing, and never compressed
    status, headers, body = request(server, "/browse/empty-dir/")
    assert status == 200 and b"Index of /browse/empty-dir/" in body
    status, headers, body = request(server, "/browse/files/", headers={"Accept": "application/json"})
    assert b'"name":"a.txt"' in body and headers[b"content-type"] == b"application/json"
    for _ in range(20):
        status, headers, body = request(server, "/browse/big.css", headers={"Accept-Encoding": "gzip"})
        assert status == 200 and b"content-encoding" not in headers
    # /gz/ compresses with gzip only, whatever else the client takes
    for _ in range(50):
        status, headers, body = request(server, "/gz/big.css", headers={"Accept-Encoding": "br, zstd, gzip"})
        if b"content-encoding" in headers:
            break
        time.sleep(0.05)
    assert headers[b"content-encoding"] == b"gzip"


def test_compression_levels_per_location(site: Path, tmp_path: Path,
                                         ring3_process: Callable[..., RunningServer]) -> None:
    """gzip level 1 in one location, 9 in another: the same file compresses to different sizes, and an
    out-of-range level is a config error naming its key."""
    import random

    rng = random.Random(3)
    text = b" ".join(b"word%d" % rng.randrange(5000) for _ in range(20000))
    (site / "words.txt").write_bytes(text)
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        root = "{site}"
        compress_encodings = ["gzip"]
          [[site.location]]
          path = "/fast/"
          alias = "{site}/"
          gzip_level = 1
          compress_encodings = ["gzip"]
    """)
    sizes = {}
    for path in ("/words.txt", "/fast/words.txt"):
        for _ in range(200):
            _, headers, body = request(server, path, headers={"Accept-Encoding": "gzip"})
            if b"content-encoding" in headers:
                break
            time.sleep(0.05)  # compressed in a worker thread after the cache admits the file
        assert headers[b"content-encoding"] == b"gzip"
        sizes[path] = len(body)
    assert sizes["/fast/words.txt"] > sizes["/words.txt"]  # level 1 against the default 9
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[site]]\nhosts = ["*"]\nroot = "{site}"\nbrotli_quality = 12\n')
    done = subprocess.run([sys.executable, "-m", "ring3", "check-config", str(bad)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "site[1].brotli_quality: must be at most 11" in done.stderr
