"""Config: schema defaults, TOML loading, validation, rendering, and the generated command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import ring3
from ring3.cli import build_parser, flag_name
from ring3.config import (
    Config,
    ConfigError,
    LimitsSection,
    ListenAddress,
    ServerSection,
    StaticSection,
    build_config,
    load_toml,
    parse_listen,
    render_toml,
)
from ring3.config.schema import SECTIONS
from ring3.dates import DateCache

# -- helpers ----------------------------------------------------------------------------------------


def write_toml(tmp_path: Path, text: str, name: str = "ring3.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path: Path) -> Config:
    return build_config(load_toml(str(path)), str(path))


def config_error(data: dict[str, Any], source: str = "site.toml") -> ConfigError:
    """The ConfigError that `data` must cause."""
    with pytest.raises(ConfigError) as info:
        build_config(data, source)
    assert info.value.source == source
    assert str(info.value) == f"{source}: {info.value.key}: {info.value.reason}"
    return info.value


def one(section: str, key: str, value: Any) -> Config:
    return build_config({section: {key: value}}, "site.toml")


def run_ring3(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ring3", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


ALL_FIELDS = [(name, f) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


# -- defaults and loading ---------------------------------------------------------------------------


def test_defaults_build() -> None:
    config = build_config()
    assert config == Config()
    assert config.server == ServerSection()
    assert config.limits == LimitsSection()
    assert config.static == StaticSection()
    for section, f in ALL_FIELDS:
        assert getattr(getattr(config, section), f.name) == f.default, f.name


def test_sections_match_config_fields() -> None:
    # every field but the [[site]] tables, which have a schema of their own (config/site_schema.py)
    assert [*SECTIONS, "sites"] == [f.name for f in dataclasses.fields(Config)]


def test_toml_file_is_loaded(tmp_path: Path) -> None:
    path = write_toml(tmp_path, """
[server]
listen = ["127.0.0.1:9000", "[::1]:9001", "unix:/tmp/ring3.sock"]
server_header = "test/1"
log_level = "debug"

[limits]
max_body_size = "2m"
max_header_count = 50
header_timeout = "500ms"

[static]
root = "/srv/www"
index = ["index.htm", "index.html"]
dotfiles = true
""")
    config = load(path)
    assert config.server.listen == ("127.0.0.1:9000", "[::1]:9001", "unix:/tmp/ring3.sock")
    assert config.server.server_header == "test/1"
    assert config.server.log_level == "debug"
    assert config.limits.max_body_size == 2 * 1024 * 1024
    assert config.limits.max_header_count == 50
    assert config.limits.header_timeout == 0.5
    assert config.static.root == "/srv/www"
    assert config.static.index == ("index.htm", "index.html")
    assert config.static.dotfiles is True
    # untouched keys keep their defaults
    assert config.limits.max_request_line == LimitsSection().max_request_line
    assert config.server.access_log == ServerSection().access_log


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[limits]\nmax_body_size = 100\n")
    config = build_config(load_toml(str(path)), str(path), {("limits", "max_body_size"): "5k"})
    assert config.limits.max_body_size == 5 * 1024


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_toml(str(missing))
    assert info.value.source == str(missing)


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server\nlisten = ")
    with pytest.raises(ConfigError) as info:
        load_toml(str(path))
    assert info.value.source == str(path)
    assert "TOML" in info.value.reason


# -- validation -------------------------------------------------------------------------------------


def test_unknown_section_names_it() -> None:
    error = config_error({"serve": {"listen": ["127.0.0.1:1"]}})
    assert error.key == "serve"
    assert "unknown section" in error.reason


def test_unknown_key_names_it() -> None:
    error = config_error({"limits": {"max_body_sise": 10}})
    assert error.key == "limits.max_body_sise"
    assert "unknown key" in error.reason
    assert "max_body_size" in error.reason  # the known keys are listed


def test_section_must_be_a_table() -> None:
    assert config_error({"server": 3}).key == "server"


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("limits", "max_body_size", True),
        ("limits", "max_body_size", 1.5),
        ("limits", "max_body_size", [1]),
        ("limits", "max_header_count", "many"),
        ("limits", "max_header_count", "16k"),  # sizes are for byte counts only
        ("limits", "header_timeout", True),
        ("limits", "header_timeout", "soon"),
        ("limits", "header_timeout", [1]),
        ("server", "listen", 8000),
        ("server", "listen", ["127.0.0.1:1", 2]),
        ("server", "access_log", 5),
        ("server", "log_level", "loud"),
        ("static", "dotfiles", 1),
        ("static", "dotfiles", "maybe"),
        ("static", "root", ["/srv"]),
    ],
)
def test_wrong_type_is_a_config_error(section: str, key: str, value: Any) -> None:
    error = config_error({section: {key: value}})
    assert error.key == f"{section}.{key}"
    assert repr(value) in error.reason or str(value) in error.reason


@pytest.mark.parametrize(
    ("text", "size"),
    [(4096, 4096), ("4096", 4096), ("16k", 16 * 1024), ("16K", 16 * 1024), ("16kb", 16 * 1024),
     ("16KiB", 16 * 1024), ("1m", 1024**2), ("1MB", 1024**2), ("2g", 2 * 1024**3), (" 8 k ", 8192)],
)
def test_size_strings(text: Any, size: int) -> None:
    assert one("limits", "max_body_size", text).limits.max_body_size == size


@pytest.mark.parametrize("text", ["1.5m", "16q", "k", "-1", "0x10", "16 kk", ""])
def test_bad_size_strings(text: str) -> None:
    error = config_error({"limits": {"max_body_size": text}})
    assert error.key == "limits.max_body_size"
    assert "16k" in error.reason  # the message shows what a size looks like


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(5, 5.0), (2.5, 2.5), ("500ms", 0.5), ("10s", 10.0), ("10", 10.0), ("1.5s", 1.5),
     ("2m", 120.0), ("1h", 3600.0)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert one("limits", "header_timeout", text).limits.header_timeout == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "10 days", "-1s", "inf", "nan", "1e3", float("inf"),
                                  float("nan")])
def test_bad_durations(text: Any) -> None:
    assert config_error({"limits": {"header_timeout": text}}).key == "limits.header_timeout"


@pytest.mark.parametrize(
    ("section", "key", "low", "ok"),
    [
        ("limits", "max_request_line", 63, 64),
        ("limits", "max_header_bytes", 255, 256),
        ("limits", "max_header_count", 0, 1),
        ("limits", "max_body_size", -1, 0),
        ("limits", "header_timeout", 0.009, 0.01),
        ("limits", "keepalive_timeout", -0.5, 0),
        ("static", "max_ranges", 0, 1),
        ("server", "shutdown_grace", -1, 0),
    ],
)
def test_minimums(section: str, key: str, low: float, ok: float) -> None:
    error = config_error({section: {key: low}})
    assert error.key == f"{section}.{key}"
    assert "at least" in error.reason
    assert getattr(getattr(one(section, key, ok), section), key) == ok


def test_minimum_applies_to_size_strings() -> None:
    assert config_error({"limits": {"max_header_bytes": "0k"}}).key == "limits.max_header_bytes"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8000", ListenAddress("127.0.0.1", 8000)),
        ("0.0.0.0:0", ListenAddress("0.0.0.0", 0)),
        ("localhost:65535", ListenAddress("localhost", 65535)),
        ("[::1]:443", ListenAddress("::1", 443)),
        ("[::]:80", ListenAddress("::", 80)),
        ("unix:/run/ring3.sock", ListenAddress("", 0, "/run/ring3.sock")),
    ],
)
def test_parse_listen(text: str, address: ListenAddress) -> None:
    assert parse_listen(text) == address
    assert parse_listen(text).is_unix == text.startswith("unix:")


@pytest.mark.parametrize(
    "text",
    ["8000", ":8000", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
     "127.0.0.1:http", "::1:80", "[::1]80", "[::1]", "unix:", ""],
)
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)
    error = config_error({"server": {"listen": ["127.0.0.1:8000", text]}})
    assert error.key == "server.listen"


def test_empty_listen_list() -> None:
    assert config_error({"server": {"listen": []}}).key == "server.listen"


def test_a_single_listen_string_is_accepted() -> None:
    assert one("server", "listen", "127.0.0.1:1").server.listen == ("127.0.0.1:1",)


@pytest.mark.parametrize("header", ["ring3\r\nX-Injected: 1", "ring3\nX: 1", "ring3\r", "a\0b"])
def test_server_header_with_control_characters_is_refused(header: str) -> None:
    error = config_error({"server": {"server_header": header}})
    assert error.key == "server.server_header"


@pytest.mark.parametrize("header", ["ring3 \u4e2d", "ring3\x01", "ring3\x7f"])
def test_server_header_must_be_sendable(header: str) -> None:
    # Whatever passes validation must be usable in a response head: Latin-1 and no CTLs.
    error = config_error({"server": {"server_header": header}})
    assert error.key == "server.server_header"


def test_accepted_server_header_builds_a_date_cache() -> None:
    header = one("server", "server_header", "ring3/0.1 (linux; x86_64)").server.server_header
    assert DateCache(header).common_headers().endswith(b"server: ring3/0.1 (linux; x86_64)\r\n")
    # Only printable ASCII is accepted: obs-text in a value is legal but not worth the ambiguity.
    assert config_error({"server": {"server_header": "caf\u00e9"}}).key == "server.server_header"


@pytest.mark.parametrize("name", ["", "a/b", ".", ".."])
def test_bad_index_names(name: str) -> None:
    assert config_error({"static": {"index": ["index.html", name]}}).key == "static.index"


def test_errors_in_overrides_name_the_command_line() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"server": {"log_level": "info"}}, "site.toml",
                     {("limits", "max_body_size"): "lots"})
    assert info.value.source == "command line"
    assert info.value.key == "limits.max_body_size"


def test_cross_field_errors_in_overrides_name_the_command_line() -> None:
    # --listen came from the command line: the file is not to blame.
    with pytest.raises(ConfigError) as info:
        build_config({"server": {"log_level": "info"}}, "site.toml",
                     {("server", "listen"): ["nope"]})
    assert info.value.key == "server.listen"
    assert info.value.source == "command line"


# -- render_toml ------------------------------------------------------------------------------------


def round_trip(config: Config, tmp_path: Path) -> Config:
    path = write_toml(tmp_path, render_toml(config), "rendered.toml")
    return load(path)


def test_render_toml_round_trips_the_defaults(tmp_path: Path) -> None:
    assert round_trip(Config(), tmp_path) == Config()


def test_render_toml_round_trips_every_setting_changed(tmp_path: Path) -> None:
    config = build_config({
        "server": {"listen": ["[::1]:0", "unix:/tmp/a b.sock tls", "127.0.0.1:0 redirect-https"],
                   "admin": "127.0.0.1:9", "loop": "uvloop", "workers": 3, "master": True,
                   "worker_start_timeout": "90s",
                   "server_header": 'say "hi" \\o/',
                   "access_log": "/var/log/ring3 \u00e9.log", "access_log_format": "json",
                   "log_level": "error",
                   "shutdown_grace": 0.25, "replay_cache_entries": 0, "replay_max_request": "1k",
                   "proxy_protocol": True, "proxy_protocol_from": ["10.0.0.0/8"],
                   "trusted_proxies": ["192.0.2.0/24", "::1"]},
        "limits": {"max_request_line": 100, "max_header_bytes": "64k", "max_header_count": 7,
                   "max_body_size": 0, "header_timeout": "1500ms", "body_timeout": 1e-2,
                   "keepalive_timeout": 0, "max_requests_per_connection": 3,
                   "max_connections": 12, "max_connections_per_address": 2, "send_timeout": 99.5,
                   "lingering_timeout": 0.1,
                   "tls_handshake_timeout": "2s", "proxy_protocol_timeout": "1s"},
        "static": {"root": "C:\\odd\\'path'", "index": ["a.html", "b \u4e2d.html"],
                   "dotfiles": True, "follow_symlinks_outside_root": True,
                   "sendfile_min_size": 1, "max_ranges": 1, "cache_max_bytes": "1m",
                   "cache_max_file_size": 100, "cache_recheck": "250ms",
                   "open_files_max": 7, "mount": "/files", "precompressed": False, "compress": False,
                   "listing": True,
                   "compress_encodings": ["gzip"], "compress_types": ["text/html"], "compress_min_size": 1,
                   "compress_max_size": "2m", "compress_cache_bytes": "1m", "gzip_level": 5,
                   "brotli_quality": 4, "zstd_level": 3, "compress_disk_bytes": "10m",
                   "compress_dir": "/var/tmp"},
        "app": {"target": "pkg.mod:make.app", "factory": True, "interface": "wsgi", "app_dir": "/srv/x y",
                "mount": "/api", "root_path": "/prefix", "lifespan": "off", "wsgi_threads": 3,
                "websocket_max_message": "4k", "websocket_ping_interval": 0,
                "websocket_ping_timeout": "2s", "websocket_compression": False, "compress": True,
                "compress_event_stream": True, "stream_gzip_level": 1, "stream_brotli_quality": 1,
                "stream_zstd_level": 1, "request_encodings": ["gzip"]},
        "tls": {"cert": ["a.pem", "b c.pem"], "key": ["a.key", "b.key"], "key_password_file": "/run/pw",
                "sni_strict": True, "min_version": "1.3", "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256",
                "session_tickets": False, "verify_client": "optional", "client_ca": "ca.pem"},
        "http2": {"enabled": False, "cleartext": False, "websockets": False, "file_frames": "sendfile",
                  "max_concurrent_streams": 7,
                  "initial_window_size": "1m", "connection_window_size": "2m", "max_frame_size": "32k",
                  "max_header_list_size": "8k", "header_table_size": 0, "control_frame_burst": 5,
                  "control_frame_rate": 0.5},
    })
    for section, f in ALL_FIELDS:  # the test changes every setting
        assert getattr(getattr(config, section), f.name) != f.default, f.name
    assert round_trip(config, tmp_path) == config


def test_render_toml_round_trips_control_characters_in_strings(tmp_path: Path) -> None:
    # A directory name may hold any byte but NUL and '/': the rendered TOML must still load.
    config = build_config({"static": {"root": "/srv/tab\there/new\nline/del\x7f/bell\x07"},
                           "server": {"access_log": "/var/log/\x1b[31mred"}})
    assert round_trip(config, tmp_path) == config


# -- the schema and the generated command line ------------------------------------------------------


def config_actions() -> dict[str, list[str]]:
    """dest -> option strings of the generated config flags of `serve` (and check-config's)."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    choices: dict[str, argparse.ArgumentParser] = dict(subparsers.choices or {})
    found: dict[str, dict[str, list[str]]] = {}
    for command, sub in choices.items():
        found[command] = {a.dest: list(a.option_strings) for a in sub._actions
                          if a.dest.startswith("cfg__")}
    assert found["serve"] == found["check-config"]
    return found["serve"]


@pytest.mark.parametrize(("section", "f"), ALL_FIELDS, ids=[f"{s}.{f.name}" for s, f in ALL_FIELDS])
def test_every_setting_has_a_doc_and_a_flag(section: str, f: dataclasses.Field[Any]) -> None:
    doc = f.metadata.get("doc")
    assert isinstance(doc, str) and doc.strip(), f"{section}.{f.name} has no doc"
    flags = config_actions()[f"cfg__{section}__{f.name}"]
    assert flag_name(f.name, dict(f.metadata)) in flags
    assert all(flag.startswith("--") for flag in flags)


def test_generated_flags_are_unique() -> None:
    actions = config_actions()
    assert len(actions) == len(ALL_FIELDS)
    flags = [flag for options in actions.values() for flag in options]
    assert len(flags) == len(set(flags))
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    serve: argparse.ArgumentParser = dict(commands or {})["serve"]
    other = [o for a in serve._actions if not a.dest.startswith("cfg__") for o in a.option_strings]
    assert not set(flags) & set(other)


def test_flags_reach_the_config() -> None:
    from ring3.cli import load_config

    args = build_parser().parse_args([
        "serve", "/srv", "--max-body-size", "3k", "--listen", "127.0.0.1:1", "--listen",
        "[::1]:2", "--dotfiles", "--header-timeout", "250ms", "--index", "home.html",
    ])
    config = load_config(args)
    assert config.limits.max_body_size == 3072
    assert config.server.listen == ("127.0.0.1:1", "[::1]:2")
    assert config.static.dotfiles is True
    assert config.limits.header_timeout == 0.25
    assert config.static.index == ("home.html",)
    assert config.static.root == "/srv"
    assert load_config(build_parser().parse_args(["serve", "--no-dotfiles"])).static.dotfiles is False


# -- the CLI, as a process --------------------------------------------------------------------------


def test_check_config_prints_the_effective_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[limits]\nmax_body_size = "2m"\n[static]\ndotfiles = true\n')
    result = run_ring3("check-config", str(path), "--max-header-count", "9")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed = tomllib.loads(result.stdout)
    assert printed["limits"]["max_body_size"] == 2 * 1024 * 1024
    assert printed["limits"]["max_header_count"] == 9
    assert printed["static"]["dotfiles"] is True
    expected = build_config(load_toml(str(path)), str(path), {("limits", "max_header_count"): 9})
    assert build_config(printed, "<stdout>") == expected


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[limits]\nmax_body_sise = 3\n", "limits.max_body_sise", "unknown key"),
        ('[limits]\nmax_body_size = "lots"\n', "limits.max_body_size", "expected a whole number"),
        ("[limits]\nmax_request_line = 10\n", "limits.max_request_line", "at least 64"),
        ('[server]\nlisten = ["nowhere"]\n', "server.listen", "not HOST:PORT"),
        ("[nope]\n", "nope", "unknown section"),
        ("[server\n", "-", "not valid TOML"),
    ],
)
def test_check_config_with_a_bad_file_exits_2(tmp_path: Path, text: str, key: str,
                                              reason: str) -> None:
    path = write_toml(tmp_path, text, "bad-config.toml")
    result = run_ring3("check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"ring3: config error: {path}: {key}: ")
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_with_a_missing_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    result = run_ring3("check-config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_version_says_which_build_runs() -> None:
    """--version names the build this process imports: the compiled hot path or the .py files; with
    RING3_EXPECT_BUILD (scripts/test sets it for each of its two passes) it must be that one."""
    from ring3 import compiled

    modules = [importlib.import_module(name) for name in compiled.MODULES]
    extensions = [module for module in modules if not (module.__file__ or "").endswith(".py")]
    result = run_ring3("--version")
    assert result.returncode == 0
    if extensions:
        build = f"compiled: mypyc, {len(extensions)} of {len(modules)} hot-path modules"
    else:
        build = "pure Python" + (", RING3_PURE set" if os.environ.get("RING3_PURE") else "")
    assert result.stdout.strip() == f"ring3 {ring3.__version__} ({build})"
    expected = os.environ.get("RING3_EXPECT_BUILD")
    if expected == "compiled":
        assert len(extensions) == len(modules), [module.__file__ for module in modules]
    elif expected == "pure":
        assert not extensions, [module.__file__ for module in extensions]


def test_serve_with_a_bad_size_flag_exits_2() -> None:
    result = run_ring3("serve", "--max-body-size", "abc")
    assert result.returncode == 2
    assert result.stderr.startswith("ring3: config error: command line: limits.max_body_size: ")
    assert "'abc'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_serve_a_missing_directory_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent-dir"
    result = run_ring3("serve", str(missing), "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "config error" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


@pytest.mark.parametrize(("key", "value"), [
    ("app.target", "no_colon"), ("app.target", "mod:"), ("app.mount", "api"), ("app.mount", "/a?b"),
    ("app.root_path", "/api/"), ("static.mount", "static"), ("static.mount", "/a b"),
])
def test_app_and_mount_values_are_checked(key: str, value: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError) as info:
        build_config({section: {name: value}}, "site.toml")
    assert info.value.key == key


def test_an_app_and_static_files_cannot_share_a_mount() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"app": {"target": "m:app"}, "static": {"root": "/srv"}}, "site.toml")
    assert info.value.key == "static.mount"
    assert "/static" in info.value.reason
    config = build_config({"app": {"target": "m:app"}, "static": {"root": "/srv", "mount": "/static/"}})
    assert config.static.mount == "/static/"


@pytest.mark.parametrize("key", ["proxy_protocol_from", "trusted_proxies"])
def test_a_bad_network_is_a_config_error_naming_its_key(tmp_path: Path, key: str) -> None:
    path = write_toml(tmp_path, f'[server]\n{key} = ["10.0.0.0/33"]\n', "bad-config.toml")
    result = run_ring3("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"ring3: config error: {path}: server.{key}: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_proxy_protocol_listen_option() -> None:
    address = parse_listen("0.0.0.0:8000 tls proxy_protocol")
    assert address.tls and address.proxy_protocol
    assert not parse_listen("0.0.0.0:8000").proxy_protocol
