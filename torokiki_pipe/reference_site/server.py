"""The reference website's HTTP server: the content API over a Store, with fault injection.

``make_server(store_dir, site_url, api_key)`` binds a TorokikiServer to a store with its
seeds; ``serve_in_thread(...)`` also serves it from a daemon thread and returns
``(server, base_url)``; ``server.shutdown()`` stops it, wakes the answers that sleep or
write for long, and closes the socket.  Standard library only; not for production.

The API (torokiki-api.md; contract.py holds its rules):

``GET /image/{seed}/response[/{id}]`` (and HEAD)
    200 with the content object, 404 when there is none.
``POST /image/{seed}/response``
    401 without the server's X-API-Key (when it has one), 415 unless the Content-Type is
    application/json, 404 for a seed that does not exist, 400 for a body that is not JSON
    or breaks the contract; otherwise stored and answered 201 ``{"id", "location"}`` with
    the new response's Location.  A known Idempotency-Key stores nothing and answers the
    first submission's 201 again, with ``Idempotent-Replayed: true``.
Anything else
    404 for another path, 405 for a POST to a response and for other methods, 411 for a
    chunked body, 413 for a body over MAX_BODY_BYTES.

Fault injection (loopback clients only) for tests::

    POST /_control  {"mode": MODE, "delay": s, "status": n, "size": bytes, "location": URL|null,
                     "part": "body"|"head", "length": true|false}
    GET  /_control  the current mode
    GET  /_stats    counters since start and the stored responses:
                    {"posts": every POST to /image/N/response (faults included),
                     "stored", "duplicates" (same Idempotency-Key), "rejected" (400/404/415),
                     "unauthorized" (401), "faults" (injected), "gets",
                     "mode": {...}, "items": [{"id", "seed", "idempotency_key",
                     "location", "content" (Attachment as {"name", "bytes"})}, ...]}

Modes (each applies to the API paths ``/image/...``, never to ``/_control`` and ``/_stats``):

``ok``
    answers normally.
``down``
    answers ``status`` (default 503; 408 and 429 work too) without storing.
``refuse``
    answers ``status`` (default 403; 401, 407, 422... work too) without storing.
``slow``
    sleeps ``delay`` seconds (default 5), then answers normally.
``flaky``
    answers 503 to the 1st, 3rd, 5th... API request after the mode was set, normally to the others.

Hostile modes: what a broken or malicious website does to a client.  The key
echoed is the X-API-Key the client sent, or the server's own when none was sent.

``echo-key``
    echoes the key.  A POST with ``status`` 201/301/302/303 is stored and answered
    with the key in a response header (``X-Echo-Key``), in the Location
    (``...?api_key=KEY``) and in the body; any other ``status`` (default 422) is
    answered, without storing, with a JSON ``error`` quoting the key in several
    forms (plain, upper case, URL-encoded, split across a line break, base64,
    JSON \\u escapes in the raw body) and the header.  A GET (``status`` default
    200) gets the content with the key added to its ``Text`` and inside its file.
``huge``
    answers with a body of ``size`` bytes (default 200 MB), written in chunks:
    a GET gets valid content JSON whose file fills it; a POST is stored and
    answered ``status`` (default 201, with the Location) with JSON padding.
    ``"length": false`` leaves out Content-Length (the body ends when the
    connection closes).
``endless``
    like ``huge``, but the body is chunked and never ends.
``trickle``
    answers normally (a POST is stored, ``status`` default 201), but writes the
    body one byte every ``delay`` seconds (default 1); ``"part": "head"``
    trickles the whole answer from its status line on.
``foreign-location``
    stores a POST and answers ``status`` (default 201) with ``location`` as its
    Location (default ``http://evil.example/image/1/response/1``; ``null``:
    no Location at all).  GETs answer normally.

A mode that writes for long (``huge``, ``endless``, ``trickle``) stops when the
client goes away (a write fails, or blocks for WRITE_TIMEOUT seconds), when the
server shuts down, and at the latest after ENDLESS_LIMIT bytes or MAX_DELAY seconds.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from torokiki_pipe.reference_site.contract import CONTENT_PATH, SAVED_STATUSES, Invalid, validate
from torokiki_pipe.reference_site.store import Store

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_DELAY = 600.0
MODES = ("ok", "down", "refuse", "slow", "flaky", "echo-key", "huge", "endless", "trickle", "foreign-location")
HOSTILE_MODES = ("echo-key", "huge", "endless", "trickle", "foreign-location")
DEFAULT_HUGE_SIZE = 200 * 1024 * 1024
MAX_HUGE_SIZE = 1 << 34
ENDLESS_LIMIT = 1 << 34            # an "endless" body still stops here (16 GB)
WRITE_TIMEOUT = 10.0               # a client that stops reading is a client gone
DEFAULT_FOREIGN_LOCATION = "http://evil.example/image/1/response/1"


class BadControl(Exception):
    """A /_control body the server cannot apply; str() says why (the 400 answer's error)."""


def _json_answer(value: Any) -> bytes:
    """The body of a JSON answer, as every answer of this server writes it."""
    return (json.dumps(value, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


# Raw length a multiple of 3, so any prefix of a multiple of 4 characters is valid base64.
BASE64_BLOCK = base64.b64encode(bytes(range(256)) * 3 * 256)


class Filler:
    """`size` bytes (None: without end) made of `block` repeated, in chunks of at most its size."""

    def __init__(self, size: int | None, block: bytes):
        self.size, self.block = size, block

    def __len__(self) -> int:
        return self.size or 0

    def __iter__(self):
        left = self.size
        while left is None or left > 0:
            chunk = self.block if left is None or left >= len(self.block) else self.block[:left]
            if left is not None:
                left -= len(chunk)
            yield chunk


def stats_item(record: dict) -> dict:
    """A stored response as /_stats lists it: everything, the attachment's data as its size."""
    content = dict(record["content"])
    if "Attachment" in content:
        attachment = content["Attachment"]
        content["Attachment"] = {"name": attachment["name"],
                                 "bytes": len(base64.b64decode(attachment["data"]))}
    return {"id": record["id"], "seed": record["seed"], "idempotency_key": record["idempotency_key"],
            "location": record["location"], "content": content}


# --------------------------------------------------------------------------- server

class TorokikiServer(ThreadingHTTPServer):
    """The HTTP server of one Store; the fault-injection mode and the /_stats counters live here."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, store: Store, api_key: str | None = None, quiet: bool = False):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.store = store
        self.api_key = api_key or None
        self.quiet = quiet
        self.state_lock = threading.Lock()
        self.stopping = threading.Event()
        self._closed = False
        self.mode = {"mode": "ok", "delay": 0.0, "status": None, "size": DEFAULT_HUGE_SIZE,
                     "location": DEFAULT_FOREIGN_LOCATION, "part": "body", "length": True}
        self.flaky_count = 0
        self.counts = {"posts": 0, "stored": 0, "duplicates": 0, "rejected": 0,
                       "unauthorized": 0, "faults": 0, "gets": 0}
        super().__init__(address, Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def base_url(self) -> str:
        """http://HOST:PORT where the server answers (an IPv6 host in brackets)."""
        host = self.server_address[0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def count(self, name: str) -> None:
        with self.state_lock:
            self.counts[name] += 1

    def injected_fault(self) -> tuple[int | None, float]:
        """(status to answer instead, or None; seconds to sleep first)."""
        with self.state_lock:
            mode = self.mode["mode"]
            if mode == "down":
                return self.mode["status"] or 503, 0.0
            if mode == "refuse":
                return self.mode["status"] or 403, 0.0
            if mode == "slow":
                return None, self.mode["delay"]
            if mode == "flaky":
                self.flaky_count += 1
                return (503 if self.flaky_count % 2 == 1 else None), 0.0
            return None, 0.0

    def set_mode(self, body: Any) -> dict:
        """Apply a POST /_control body and return the mode now in force; BadControl if it is wrong."""
        if not isinstance(body, dict):
            raise BadControl("the body must be a JSON object")
        mode = body.get("mode", "ok")
        if mode not in MODES:
            raise BadControl(f"mode must be one of {', '.join(MODES)}")
        delay = body.get("delay", {"slow": 5.0, "trickle": 1.0}.get(mode, 0.0))
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY:
            raise BadControl(f"delay must be a number of seconds between 0 and {MAX_DELAY:g}")
        status = body.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                                   or not 200 <= status <= 599):
            raise BadControl("status must be an HTTP status between 200 and 599")
        size = body.get("size", DEFAULT_HUGE_SIZE)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_HUGE_SIZE:
            raise BadControl(f"size must be a number of bytes between 1 and {MAX_HUGE_SIZE}")
        location = body.get("location", DEFAULT_FOREIGN_LOCATION)
        if location is not None and (not isinstance(location, str) or not location.isprintable()):
            raise BadControl("location must be a one-line string or null")
        part = body.get("part", "body")
        if part not in ("body", "head"):
            raise BadControl("part must be body or head")
        length = body.get("length", True)
        if not isinstance(length, bool):
            raise BadControl("length must be true or false")
        with self.state_lock:
            self.mode = {"mode": mode, "delay": float(delay), "status": status, "size": size,
                         "location": location, "part": part, "length": length}
            self.flaky_count = 0
            return dict(self.mode)

    def current_mode(self) -> dict:
        with self.state_lock:
            return dict(self.mode)

    def stats(self) -> dict:
        with self.state_lock:
            result = dict(self.counts)
            result["mode"] = dict(self.mode)
        result["items"] = [stats_item(r) for r in self.store.responses()]
        return result

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-answer (the gateway stops reading at its cap, or at
        # its deadline) is what the hostile modes are for, not a fault of this server.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def shutdown(self) -> None:
        """Stop serving (wakes sleeping 'slow' requests) and close the socket."""
        if self._closed:
            return
        self._closed = True
        self.stopping.set()
        super().shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: TorokikiServer
    protocol_version = "HTTP/1.1"
    # An answer is two writes (head, then body): with Nagle on, a client that keeps its
    # connection open (a requests.Session) waited ~40 ms for the second after a big POST.
    disable_nagle_algorithm = True
    server_version = "TorokikiReference/1.0"

    # ---- plumbing
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send_json(self, status: int, value: Any, headers: dict | None = None) -> None:
        body = _json_answer(value)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value_ in (headers or {}).items():
            self.send_header(name, value_)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send_json(status, {"error": message}, headers)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering an error."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._error(411, "chunked bodies are not supported: send Content-Length")
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._error(400, "bad Content-Length")
            return None
        if size > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, f"body larger than {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(size)

    def _json_body(self) -> tuple[bool, Any]:
        raw = self._read_body()
        if raw is None:
            return False, None
        try:
            return True, json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._error(400, "the body is not JSON")
            return False, None

    def _client_is_loopback(self) -> bool:
        host = self.client_address[0]
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return address.is_loopback or bool(mapped and mapped.is_loopback)

    def _request_path(self) -> str:
        return urlsplit(self.path).path

    # ---- faults
    def _answer_injected_fault(self) -> bool:
        """Answer an injected fault; True when the request was answered."""
        status, delay = self.server.injected_fault()
        if delay:
            self.server.stopping.wait(delay)
        if status is None:
            return False
        self.server.count("faults")
        self.close_connection = True
        message = "injected fault: " + self.server.mode["mode"]
        headers = {"Retry-After": "60"} if status == 503 else None
        self._error(status, message, headers)
        return True

    # ---- methods
    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self._request_path()
        if path in ("/_stats", "/_control"):
            if not self._client_is_loopback():
                self._error(403, "control endpoints answer loopback clients only")
            elif path == "/_stats":
                self._send_json(200, self.server.stats())
            else:
                self._send_json(200, dict(self.server.mode))
            return
        match = CONTENT_PATH.match(path)
        if not match:
            self._error(404, "not found")
            return
        self.server.count("gets")
        if self._answer_injected_fault():
            return
        seed, rid = int(match["seed"]), match["id"]
        store = self.server.store
        content = store.seed(seed) if rid is None else store.response(seed, int(rid))
        if content is None:
            self._error(404, "no such content")
        elif not self._answer_get_hostile(content):
            self._send_json(200, content)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        path = self._request_path()
        if path == "/_control":
            if not self._client_is_loopback():
                if self._read_body() is not None:
                    self._error(403, "control endpoints answer loopback clients only")
                return
            ok, body = self._json_body()
            if not ok:
                return
            try:
                self._send_json(200, self.server.set_mode(body))
            except BadControl as error:
                self._error(400, str(error))
            return
        match = CONTENT_PATH.match(path)
        if not match or match["id"] is not None:
            if self._read_body() is None:
                return
            if not match:
                self._error(404, "not found")
            else:
                self._error(405, "POST goes to the seed's /response collection", {"Allow": "GET, HEAD"})
            return
        self.server.count("posts")
        raw = self._read_body()
        if raw is None or self._answer_injected_fault():
            return
        mode = self.server.current_mode()
        if mode["mode"] == "echo-key" and (mode["status"] or 422) not in SAVED_STATUSES:
            self.server.count("faults")
            self._echo_key_error(mode["status"] or 422)
            return
        self._submit(int(match["seed"]), raw, mode)

    def _submit(self, seed: int, raw: bytes, mode: dict) -> None:
        server, store = self.server, self.server.store
        if server.api_key is not None:
            given = self.headers.get("X-API-Key", "")
            if not hmac.compare_digest(given.encode("utf-8"), server.api_key.encode("utf-8")):
                server.count("unauthorized")
                self._error(401, "missing or wrong X-API-Key")
                return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            server.count("rejected")
            self._error(415, "Content-Type must be application/json")
            return
        if store.seed(seed) is None:
            server.count("rejected")
            self._error(404, f"no seed {seed}")
            return
        try:
            content = json.loads(raw.decode("utf-8"))
            if not isinstance(content, dict):
                raise Invalid("the body must be a JSON object")
        except (UnicodeDecodeError, ValueError):
            server.count("rejected")
            self._error(400, "the body is not JSON")
            return
        except Invalid as error:
            server.count("rejected")
            self._error(400, str(error))
            return
        key = self.headers.get("Idempotency-Key")
        key = key.strip() if key and key.strip() else None
        known = None
        with store.lock:      # answered after it is released: a trickled answer must not hold it
            if key is not None:
                known = store.earlier_submission(key)
            if known is None:
                try:
                    validate(content, seed, store)
                except Invalid as error:
                    server.count("rejected")
                    self._error(400, str(error))
                    return
                record = store.add_response(seed, content, key, sent=raw)
        if known is not None:
            server.count("duplicates")
            self._answer_saved({"id": known["id"], "location": known["location"]},
                               {"Idempotent-Replayed": "true"}, mode)
            return
        server.count("stored")
        self._answer_saved({"id": record["id"], "location": record["location"]}, {}, mode)

    # ---- hostile modes
    def _answer_saved(self, value: dict, headers: dict, mode: dict) -> None:
        """Answer a stored (or replayed) submission: 201 with its Location, unless a hostile mode says otherwise."""
        name, location = mode["mode"], value["location"]
        if name not in HOSTILE_MODES:
            self._send_json(201, value, {"Location": location, **headers})
            return
        status = mode["status"] or 201
        if name == "echo-key":
            key = self._echoed_key()
            self._send_json(status, {**value, "key": key},
                            {"Location": f"{location}?api_key={key}", "X-Echo-Key": key, **headers})
            return
        if name == "foreign-location":
            given = {"Location": mode["location"]} if mode["location"] is not None else {}
            self._send_json(status, value, {**given, **headers})
            return
        if status in SAVED_STATUSES:
            headers = {"Location": location, **headers}
        if name == "trickle":
            self._trickle(status, headers, _json_answer(value), mode)
            return
        head = json.dumps(value, ensure_ascii=False)[:-1].encode("utf-8") + b', "padding": "'
        if name == "huge":
            size = max(0, mode["size"] - len(head) - 2)
            self._write_long_body(status, headers, [head, Filler(size, b"x" * 65536), b'"}'], mode)
        else:
            self._write_long_body(status, headers, [head, Filler(None, b"x" * 65536)], mode, chunked=True)

    def _answer_get_hostile(self, content: dict) -> bool:
        """Answer a GET of `content` as the hostile mode says; False when it says nothing."""
        mode = self.server.current_mode()
        name = mode["mode"]
        if name == "echo-key":
            key = self._echoed_key()
            if (mode["status"] or 200) != 200:
                self._echo_key_error(mode["status"])
                return True
            content = dict(content)
            content["Text"] = f"{content.get('Text', '')}\n(served with the key {key})".lstrip()
            if isinstance(content.get("Attachment"), dict):
                data = base64.b64decode(content["Attachment"]["data"]) + b"\napi_key=" + key.encode("utf-8")
                content["Attachment"] = {**content["Attachment"], "data": base64.b64encode(data).decode("ascii")}
            self._send_json(200, content, {"X-Echo-Key": key})
        elif name == "huge":
            head = (b'{"Submitter": "Torokiki curators <curators@torokiki.net>", "Text": "A very large file.", '
                    b'"Attachment": {"name": "huge.bin", "data": "')
            size = max(4, (mode["size"] - len(head) - 3) // 4 * 4)
            self._write_long_body(mode["status"] or 200, {}, [head, Filler(size, BASE64_BLOCK), b'"}}'], mode)
        elif name == "endless":
            self._write_long_body(mode["status"] or 200, {}, [b'{"Text": "', Filler(None, b"a" * 65536)], mode,
                         chunked=True)
        elif name == "trickle":
            self._trickle(mode["status"] or 200, {}, _json_answer(content), mode)
        else:
            return False
        return True

    def _echoed_key(self) -> str:
        return self.headers.get("X-API-Key") or self.server.api_key or "no-key-configured"

    def _echo_key_error(self, status: int) -> None:
        """An error whose text quotes the key in the forms a careless website might."""
        key = self._echoed_key()
        half = len(key) // 2
        forms = [key, key.upper(), "".join(f"%{b:02X}" for b in key.encode("utf-8")),
                 f"{key[:half]}\n{key[half:]}", base64.b64encode(key.encode("utf-8")).decode("ascii")]
        escaped = "".join(f"\\u{ord(c):04x}" for c in key)        # stays escaped in the raw body
        body = ('{"error": ' + json.dumps(f"wrong X-API-Key {' / '.join(forms)}") +
                f', "sent": "{escaped}"}}\n').encode("utf-8")
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo-Key", key)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _write_long_body(self, status: int, headers: dict, pieces: list, mode: dict, chunked: bool = False) -> None:
        """Write a long body in chunks, until done, the client is gone or the server stops."""
        self.close_connection = True
        self.connection.settimeout(WRITE_TIMEOUT)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif mode["length"]:
            self.send_header("Content-Length", str(sum(len(p) for p in pieces)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        started, written = time.monotonic(), 0
        try:
            self.end_headers()
            for piece in pieces:
                for chunk in ([piece] if isinstance(piece, bytes) else piece):
                    if (self.server.stopping.is_set() or written > ENDLESS_LIMIT
                            or time.monotonic() - started > MAX_DELAY):
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    written += len(chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:      # the client went away, or stopped reading for WRITE_TIMEOUT
            return

    def _trickle(self, status: int, headers: dict, body: bytes, mode: dict) -> None:
        """Write the answer one byte every `delay` seconds (its body, or all of it)."""
        self.close_connection = True
        self.connection.settimeout(WRITE_TIMEOUT)
        self.log_request(status)
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}",
                 f"Server: {self.version_string()}", f"Date: {self.date_time_string()}",
                 "Content-Type: application/json; charset=utf-8", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        dribble = head + body if mode["part"] == "head" else body
        started = time.monotonic()
        try:
            if mode["part"] != "head":
                self.wfile.write(head)
            for index in range(len(dribble)):
                if self.server.stopping.wait(mode["delay"]) or time.monotonic() - started > MAX_DELAY:
                    return
                self.wfile.write(dribble[index:index + 1])
        except OSError:      # the client went away
            return

    def _not_allowed(self) -> None:
        if self._read_body() is not None:
            self._error(405, "method not allowed", {"Allow": "GET, HEAD, POST"})

    do_PUT = do_DELETE = do_PATCH = _not_allowed


# --------------------------------------------------------------------------- running

def make_server(store_dir: os.PathLike | str, site_url: str, api_key: str | None = None,
                host: str = "127.0.0.1", port: int = 0, quiet: bool = False) -> TorokikiServer:
    store = Store(store_dir, site_url)
    store.populate()
    return TorokikiServer((host, port), store, api_key=api_key, quiet=quiet)


def serve_in_thread(store: os.PathLike | str, site_url: str, api_key: str | None = None,
                    host: str = "127.0.0.1", quiet: bool = True) -> tuple[TorokikiServer, str]:
    """Start a server on a free loopback port in a daemon thread.

    Returns (server, base_url); ``server.shutdown()`` stops it and closes the socket.
    """
    server = make_server(store, site_url, api_key=api_key, host=host, port=0, quiet=quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="torokiki-website", daemon=True)
    thread.start()
    server.thread = thread
    return server, server.base_url
