from conftest import ResponseReader, RunningServer


def test_get_index(served: RunningServer) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = ResponseReader(sock).read()
    assert status == 200
    assert b"hello" in body
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
