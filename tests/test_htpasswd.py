"""ring3.sites.htpasswd against files made by the real tools: htpasswd (apache2-utils) and openssl passwd."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ring3.sites.htpasswd import MAX_AUTHORIZATION_BYTES, VERIFIED_CACHE_ENTRIES, Htpasswd, HtpasswdError

PASSWORD = "pässwörd: s3cret".encode()  # non-ASCII, and a colon: the header splits at the first one only


def run_tool(args: list[str], password: bytes) -> str:
    """The tool's output for `password` given on standard input (both tools strip the newline)."""
    assert shutil.which(args[0]), f"{args[0]} is missing: scripts/test installs it"
    done = subprocess.run(args, input=password + b"\n", capture_output=True, check=True, timeout=30)
    return done.stdout.decode("ascii").strip()


def htpasswd_line(user: str, password: bytes, *flags: str) -> str:
    return run_tool(["htpasswd", "-ni", *flags, user], password)


def openssl_line(user: str, password: bytes, flag: str) -> str:
    return f"{user}:{run_tool(['openssl', 'passwd', flag, '-stdin'], password)}"


def write(tmp_path: Path, *lines: str, name: str = "htpasswd") -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def basic(user: str, password: bytes, scheme: bytes = b"Basic") -> bytes:
    return scheme + b" " + base64.b64encode(user.encode() + b":" + password)


MADE_BY = {  # name -> (how to make the line, the prefix it must have, slow)
    "htpasswd-bcrypt": (lambda u, p: htpasswd_line(u, p, "-B", "-C", "5"), "$2y$05$", True),
    "htpasswd-sha256": (lambda u, p: htpasswd_line(u, p, "-2"), "$5$", True),
    "htpasswd-sha256-rounds": (lambda u, p: htpasswd_line(u, p, "-2", "-r", "9000"), "$5$rounds=9000$", True),
    "htpasswd-sha512": (lambda u, p: htpasswd_line(u, p, "-5"), "$6$", True),
    "htpasswd-sha512-rounds": (lambda u, p: htpasswd_line(u, p, "-5", "-r", "1000"), "$6$rounds=1000$", True),
    "htpasswd-apr1": (lambda u, p: htpasswd_line(u, p, "-m"), "$apr1$", False),
    "htpasswd-sha1": (lambda u, p: htpasswd_line(u, p, "-s"), "{SHA}", False),
    "openssl-apr1": (lambda u, p: openssl_line(u, p, "-apr1"), "$apr1$", False),
    "openssl-md5crypt": (lambda u, p: openssl_line(u, p, "-1"), "$1$", False),
    "openssl-sha256": (lambda u, p: openssl_line(u, p, "-5"), "$5$", True),
    "openssl-sha512": (lambda u, p: openssl_line(u, p, "-6"), "$6$", True),
}


@pytest.mark.parametrize("made_by", sorted(MADE_BY))
def test_each_scheme_checks_what_the_tool_hashed(tmp_path: Path, made_by: str) -> None:
    make, prefix, slow = MADE_BY[made_by]
    line = make("alice", PASSWORD)
    assert line.startswith(f"alice:{prefix}"), line
    users = Htpasswd.load(write(tmp_path, line, make("bob", b"other")))
    assert len(users) == 2
    assert users.slow is slow
    assert users.verify(basic("alice", PASSWORD)) == "alice"
    assert users.verify(basic("bob", b"other")) == "bob"
    assert users.verify(basic("alice", b"other")) is None
    assert users.verify(basic("alice", PASSWORD + b"x")) is None
    assert users.verify(basic("alice", b"")) is None
    assert users.verify(basic("carol", PASSWORD)) is None  # unknown: checked against a stand-in, refused


def test_password_bytes_are_not_decoded(tmp_path: Path) -> None:
    latin1 = "pässwörd".encode("latin-1")  # not UTF-8: matched as the bytes htpasswd hashed
    users = Htpasswd.load(write(tmp_path, htpasswd_line("dora", latin1, "-m")))
    assert users.verify(basic("dora", latin1)) == "dora"
    assert users.verify(basic("dora", "pässwörd".encode())) is None


def test_bcrypt_password_longer_than_72_bytes(tmp_path: Path) -> None:
    long_password = b"0123456789" * 10
    users = Htpasswd.load(write(tmp_path, htpasswd_line("erin", long_password, "-B", "-C", "4")))
    assert users.verify(basic("erin", long_password)) == "erin"
    assert users.verify(basic("erin", b"0123456789")) is None


def test_password_with_nul_byte_is_refused_not_raised(tmp_path: Path) -> None:
    users = Htpasswd.load(write(tmp_path, htpasswd_line("finn", PASSWORD, "-5")))
    assert users.verify(basic("finn", b"a\x00b")) is None


def test_scheme_name_is_case_insensitive(tmp_path: Path) -> None:
    users = Htpasswd.load(write(tmp_path, htpasswd_line("gus", PASSWORD, "-s")))
    for scheme in (b"basic", b"BASIC", b"bAsIc"):
        assert users.verify(basic("gus", PASSWORD, scheme)) == "gus"


@pytest.mark.parametrize(
    "authorization",
    [
        b"",
        b"Basic",
        b"Basic ",
        basic("gus", PASSWORD, b"Bearer"),
        basic("gus", PASSWORD, b"Basic "),  # two spaces
        basic("gus", PASSWORD, b"Basic\t"),
        basic("gus", PASSWORD) + b" ",
        basic("gus", PASSWORD).rstrip(b"="),  # padding missing
        basic("gus", PASSWORD) + b"AAAA",  # data after the padding
        basic("gus", PASSWORD).replace(b"Basic ", b"Basic !"),
        b"Basic " + base64.b64encode(b"gus" + PASSWORD),  # no colon
        b"Basic " + base64.b64encode(b"g\xffus:" + PASSWORD),  # user name not UTF-8
    ],
)
def test_malformed_authorization_is_refused(tmp_path: Path, authorization: bytes) -> None:
    users = Htpasswd.load(write(tmp_path, htpasswd_line("gus", PASSWORD, "-s")))
    assert users.verify(authorization) is None
    assert users.cached(authorization) is None


def test_authorization_longer_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    # htpasswd takes at most 255 characters, so these long passwords are hashed here ({SHA} is checked
    # against the tool above).
    def sha_line(user: str, password: bytes) -> str:
        return f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(password).digest()).decode()}"

    fits, too_long = b"f" * 3064, b"t" * 3067
    users = Htpasswd.load(write(tmp_path, sha_line("u", fits), sha_line("v", too_long)))
    assert len(basic("u", fits)) <= MAX_AUTHORIZATION_BYTES < len(basic("v", too_long))
    assert users.verify(basic("u", fits)) == "u"
    assert users.verify(basic("v", too_long)) is None


def test_cached_holds_only_successes_for_the_exact_header(tmp_path: Path) -> None:
    users = Htpasswd.load(write(tmp_path, htpasswd_line("hana", PASSWORD, "-B", "-C", "5")))
    right, wrong = basic("hana", PASSWORD), basic("hana", b"guess")
    assert users.cached(right) is None
    assert users.verify(wrong) is None
    assert users.cached(wrong) is None
    assert users.verify(right) == "hana"
    assert users.cached(right) == "hana"
    assert users.cached(basic("hana", PASSWORD, b"basic")) is None  # other bytes: not verified yet
    assert users.verify(wrong) is None  # a failure after a success does not poison the cache
    assert users.cached(wrong) is None
    assert users.cached(right) == "hana"
    other_file = write(tmp_path, htpasswd_line("hana", PASSWORD, "-s"), name="other")
    assert Htpasswd.load(other_file).cached(right) is None  # each file has its own cache


def test_cache_drops_the_oldest_past_its_bound(tmp_path: Path) -> None:
    digest = htpasswd_line("x", PASSWORD, "-s").partition(":")[2]
    names = [f"user{n}" for n in range(VERIFIED_CACHE_ENTRIES + 1)]
    users = Htpasswd.load(write(tmp_path, *(f"{name}:{digest}" for name in names)))
    for name in names:
        assert users.verify(basic(name, PASSWORD)) == name
    assert users.cached(basic(names[0], PASSWORD)) is None
    assert users.cached(basic(names[1], PASSWORD)) == names[1]
    assert users.cached(basic(names[-1], PASSWORD)) == names[-1]


def test_verify_from_many_threads(tmp_path: Path) -> None:
    flags = [("-B", "-C", "4"), ("-m",), ("-2",), ("-s",)]
    users = Htpasswd.load(write(tmp_path, *(htpasswd_line(f"t{n}", b"pw", *f) for n, f in enumerate(flags))))
    cases = [(f"t{n % 4}", b"pw" if n % 3 else b"wrong") for n in range(64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda case: users.verify(basic(*case)), cases))
    assert results == [user if password == b"pw" else None for user, password in cases]


def test_comments_blank_lines_crlf_and_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    line = htpasswd_line("ivy", PASSWORD, "-m")
    path.write_bytes(f"# users\r\n\r\n   \n{line}:extra field\r\n  # indented comment\n".encode())
    users = Htpasswd.load(str(path))
    assert len(users) == 1
    assert users.verify(basic("ivy", PASSWORD)) == "ivy"


def test_empty_file_has_no_users(tmp_path: Path) -> None:
    users = Htpasswd.load(write(tmp_path, "# nobody yet"))
    assert len(users) == 0
    assert users.slow is False
    assert users.verify(basic("ivy", PASSWORD)) is None


def test_plaintext_refused_naming_the_line_and_not_the_password(tmp_path: Path) -> None:
    path = write(tmp_path, "# team", "", htpasswd_line("jay", b"Sup3rSecret", "-p"))
    with pytest.raises(HtpasswdError, match=r"line 3: .*plaintext.*htpasswd -B") as caught:
        Htpasswd.load(path)
    assert "Sup3rSecret" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_des_crypt_refused_naming_the_line(tmp_path: Path) -> None:
    des = htpasswd_line("kim", b"s3cret", "-d")
    assert len(des.partition(":")[2]) == 13, des
    path = write(tmp_path, htpasswd_line("lee", PASSWORD, "-m"), des)
    with pytest.raises(HtpasswdError, match=r"line 2: DES crypt is insecure.*htpasswd -B"):
        Htpasswd.load(path)


def test_duplicate_user_refused_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, htpasswd_line("max", PASSWORD, "-m"), "# again", htpasswd_line("max", b"x", "-s"))
    with pytest.raises(HtpasswdError, match=r"line 3: user 'max' is already defined"):
        Htpasswd.load(path)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("no colon here", "expected user:hash"),
        (":{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0=", "expected user:hash"),
        ("ned:", "expected user:hash"),
        ("ned:$2y$05$tooShort", "malformed bcrypt hash"),
        ("ned:$2y$99$" + "a" * 53, "malformed bcrypt hash"),
        ("ned:$6$saltonly", "malformed sha512_crypt hash"),
        ("ned:$5$salt$short", "malformed sha256_crypt hash"),
        ("ned:$apr1$salt$short", "malformed apr_md5_crypt hash"),
        ("ned:{SHA}short", r"malformed \{SHA\} hash"),
        ("ned:$y$j9T$abc$def", "unsupported hash scheme"),
        ("ned:{SSHA}abcdefgh", "a plaintext password or an unknown hash scheme"),
    ],
)
def test_malformed_line_refused_naming_the_line(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, htpasswd_line("ok", PASSWORD, "-s"), line)
    with pytest.raises(HtpasswdError, match=f"line 2: {reason}"):
        Htpasswd.load(path)


def test_line_not_utf8_refused(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_bytes(htpasswd_line("ok", PASSWORD, "-s").encode() + b"\nn\xe9d:{SHA}x\n")
    with pytest.raises(HtpasswdError, match="line 2: not UTF-8"):
        Htpasswd.load(str(path))


def test_unreadable_file_refused(tmp_path: Path) -> None:
    with pytest.raises(HtpasswdError, match=r"cannot read htpasswd file .*missing: No such file"):
        Htpasswd.load(str(tmp_path / "missing"))
    with pytest.raises(HtpasswdError, match=r"cannot read htpasswd file .*: Is a directory"):
        Htpasswd.load(str(tmp_path))
