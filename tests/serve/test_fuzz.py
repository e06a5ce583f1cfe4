"""A bounded fuzz test of the HTTP API, on 127.0.0.1 only: malformed requests, random
bodies, headers, methods and paths, and broken HTTP on a raw socket. The server answers
every one with a 4xx (a few routes legitimately answer 2xx), never a 5xx, and still
generates afterwards."""

import json
import random
import socket
import string
import time
import urllib.parse

import httpx

from tests.support.bundles import PROMPT
from tests.support.http import noise_png

CASES = 160  # at most this many requests,
BUDGET_S = 45.0  # and no longer than this
ROUTES = ["/v1/generate", "/v1/images/generations", "/v1/sessions", "/v1/sessions/abc",
          "/v1/info", "/healthz", "/", "/app.js", "/v1/../etc/passwd", "/%00", "/v1/generate/x"]
CONTENT_TYPES = ["application/json", "multipart/form-data; boundary=zz", "multipart/form-data",
                 "application/x-www-form-urlencoded", "text/plain", "image/png", "",
                 "application/json; charset=latin-1", "multipart/form-data; boundary=" + "b" * 80]
FIELDS = ["prompt", "seed", "stream", "image", "session", "decoder", "temperature", "top_k",
          "top_p", "cfg_scale", "partial_images", "n", "size", "response_format"]  # fmt: skip


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "float", "text", "bool", "none", "list", "dict", "huge"]
    kind = rng.choice(kinds if depth < 3 else kinds[:5])
    if kind == "int":
        return rng.choice([0, -1, 2**31, 2**64, rng.randint(-10, 10)])
    if kind == "float":
        return rng.choice([0.0, -1e308, 1e-300, 0.5, 3.0])
    if kind == "text":
        alphabet = string.printable + "é\u2603\ud7ff"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "huge":
        return "x" * rng.choice([1000, 5000])
    return {rng.choice(FIELDS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def invalid_json_body(rng: random.Random) -> bytes:
    """A JSON object that cannot be a valid request: no usable prompt, or a bad field."""
    fields = {rng.choice(FIELDS): random_value(rng) for _ in range(rng.randint(0, 6))}
    choice = rng.randrange(4)
    if choice == 0:
        fields.pop("prompt", None)
    elif choice == 1:
        fields["prompt"] = rng.choice(["", "  ", 7, None, ["a"], {"a": 1}, "w " * 600])
    elif choice == 2:
        fields |= {"prompt": "ok", "decoder": rng.choice(["vae", "", 3, "ROLLING"])}
    else:
        fields |= {"prompt": "ok", rng.choice(["temperature", "top_p", "cfg_scale"]): -5}
    return json.dumps(fields).encode()


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 64, 700])))


def broken_multipart(rng: random.Random) -> tuple[bytes, str]:
    png = noise_png(rng.randrange(100))
    cut = rng.randrange(len(png) // 2)  # a PNG cut before its pixels end
    parts = [b'--zz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n',
             rng.choice([b"", b"\xff\xfe", b"a prompt"]), b"\r\n--zz\r\n",
             b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n',
             rng.choice([png[:cut], random_bytes(rng), png[:8] + random_bytes(rng)]),
             rng.choice([b"\r\n--zz--\r\n", b"", b"\r\n--z"])]  # fmt: skip
    return b"".join(parts), "multipart/form-data; boundary=zz"


def random_headers(rng: random.Random) -> dict[str, str]:
    headers = {}
    for _ in range(rng.randint(0, 5)):
        name = "".join(rng.choice(string.ascii_letters + "-") for _ in range(rng.randint(1, 20)))
        headers["X-" + name] = "".join(rng.choice(string.printable[:94]) for _ in range(30))
    if rng.random() < 0.3:
        headers["Authorization"] = rng.choice(["Bearer", "Bearer x", "Basic Zm9v", ""])
    if rng.random() < 0.2:
        headers["Accept"] = rng.choice(["*/*", "image/png", "text/event-stream", "x/y;q=9"])
    return headers


def fuzz_request(rng: random.Random) -> dict:
    """One random request that no correct server would carry out (or a harmless GET)."""
    kind = rng.randrange(6)
    route = "/v1/generate" if kind < 4 else rng.choice(ROUTES)
    method = "POST" if kind < 4 else rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
    headers = random_headers(rng)
    if kind == 0:
        body, content_type = invalid_json_body(rng), "application/json"
    elif kind == 1:
        body, content_type = broken_multipart(rng)
    elif kind == 2:
        body, content_type = random_bytes(rng), rng.choice(CONTENT_TYPES)
    elif kind == 3:
        query = {rng.choice(FIELDS): str(random_value(rng))[:50] for _ in range(3)}
        query.pop("prompt", None)
        body = urllib.parse.urlencode(query).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        body, content_type = random_bytes(rng), rng.choice(CONTENT_TYPES)
    headers["Content-Type"] = content_type
    return {"method": method, "url": route, "content": body, "headers": headers}


RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: -4\r\n\r\n",
    b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello to a plain-HTTP port
]


def raw_status(url: str, payload: bytes) -> int | None:
    """The status code of a raw HTTP exchange on the loopback address; None when the
    server closed the connection without one."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    assert host == "127.0.0.1"
    with socket.create_connection((host, port), timeout=10) as connection:
        try:
            connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            reply = connection.recv(256)
        except (ConnectionResetError, BrokenPipeError):
            return None
    if not reply.startswith(b"HTTP/1."):
        return None
    return int(reply.split(b" ", 2)[1])


def test_fuzzed_requests_get_4xx_never_5xx_and_the_server_still_generates(server_url):
    assert urllib.parse.urlsplit(server_url).hostname == "127.0.0.1"
    rng = random.Random(1234)
    deadline = time.monotonic() + BUDGET_S
    answered = []
    with httpx.Client(base_url=server_url, timeout=30) as client:
        for _ in range(CASES):
            if time.monotonic() > deadline:
                break
            request = fuzz_request(rng)
            response = client.request(**request)
            answered.append(response.status_code)
            assert response.status_code < 500, (request["url"], response.text[:200])
            if request["method"] == "POST" and request["url"] == "/v1/generate":
                assert 400 <= response.status_code < 500, (request, response.text[:200])
                error = response.json()["error"]["message"]
                assert error and "\n" not in error and "Traceback" not in response.text
        for payload in RAW_REQUESTS:
            status = raw_status(server_url, payload)
            assert status is None or 400 <= status < 500, (payload[:40], status)
        assert len(answered) >= 40, "the budget allowed too few requests to mean anything"
        after = client.post("/v1/generate", json={"prompt": PROMPT, "decoder": "conv"})
        assert after.status_code == 200 and after.content[:8] == b"\x89PNG\r\n\x1a\n"
