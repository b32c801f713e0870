"""fetch.py over a real local TLS server (self-signed cert made with the openssl CLI)."""
import dataclasses
import hashlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from diffxai.classes import resolve_class
from diffxai.errors import DiffxaiError
from diffxai.fetch import download, fetch_class_image

PAYLOAD = b"\xff\xd8 pretend this is a JPEG " * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 (http.server API)
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        kind, value = route
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "short":  # promises more bytes than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(value) * 2))
            self.end_headers()
            self.wfile.write(value)
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(value)))
        self.end_headers()
        self.wfile.write(value)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not available to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture(scope="module")
def server(tls_files):
    cert, key = tls_files
    routes = {"/cat.jpg": ("data", PAYLOAD), "/short.jpg": ("short", PAYLOAD)}
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"https://127.0.0.1:{httpd.server_address[1]}"
    routes["/to-http.jpg"] = ("redirect", f"http://127.0.0.1:{httpd.server_address[1]}/cat.jpg")
    routes["/to-https.jpg"] = ("redirect", f"{base}/cat.jpg")
    yield base
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client_ctx(tls_files, monkeypatch):
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return ssl.create_default_context(cafile=str(tls_files[0]))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_good_download_over_real_tls(server, client_ctx, tmp_path):
    dest = tmp_path / "cache" / "cat.jpg"
    assert download(f"{server}/cat.jpg", PAYLOAD_SHA, dest, context=client_ctx, timeout=10) == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["cat.jpg"]
    # an upper-case pinned hash is the same hash; a second download replaces atomically
    download(f"{server}/cat.jpg", PAYLOAD_SHA.upper(), dest, context=client_ctx, timeout=10)
    assert _leftovers(dest.parent) == ["cat.jpg"]


def test_redirects_only_to_https(server, client_ctx, tmp_path):
    dest = tmp_path / "cat.jpg"
    download(f"{server}/to-https.jpg", PAYLOAD_SHA, dest, context=client_ctx, timeout=10)
    assert dest.read_bytes() == PAYLOAD
    dest.unlink()
    with pytest.raises(DiffxaiError, match="only https") as exc:
        download(f"{server}/to-http.jpg", PAYLOAD_SHA, dest, context=client_ctx, timeout=10)
    assert "http://127.0.0.1" in str(exc.value)
    assert _leftovers(tmp_path) == []


def test_sha256_mismatch_leaves_no_file(server, client_ctx, tmp_path):
    dest = tmp_path / "cat.jpg"
    url = f"{server}/cat.jpg"
    with pytest.raises(DiffxaiError) as exc:
        download(url, WRONG_SHA, dest, context=client_ctx, timeout=10)
    msg = str(exc.value)
    assert "\n" not in msg and url in msg and WRONG_SHA in msg and PAYLOAD_SHA in msg
    assert _leftovers(tmp_path) == []


def test_mismatch_keeps_an_existing_good_file(server, client_ctx, tmp_path):
    dest = tmp_path / "cat.jpg"
    dest.write_bytes(b"old")
    with pytest.raises(DiffxaiError, match="sha256 mismatch"):
        download(f"{server}/cat.jpg", WRONG_SHA, dest, context=client_ctx, timeout=10)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == ["cat.jpg"]


@pytest.mark.parametrize("url", ["http://127.0.0.1/cat.jpg", "file:///etc/passwd", "ftp://x/y.jpg",
                                 "https:///nohost.jpg", "cat.jpg"])
def test_https_only(url, tmp_path):
    with pytest.raises(DiffxaiError, match="only https") as exc:
        download(url, PAYLOAD_SHA, tmp_path / "x.jpg")
    assert url in str(exc.value) and "\n" not in str(exc.value)
    assert _leftovers(tmp_path) == []


def test_bad_pinned_hash_is_refused(tmp_path):
    with pytest.raises(DiffxaiError, match="64 hex"):
        download("https://127.0.0.1/x.jpg", "abc", tmp_path / "x.jpg")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_network_error_message(client_ctx, tmp_path):
    url = f"https://127.0.0.1:{_closed_port()}/cat.jpg"
    with pytest.raises(DiffxaiError) as exc:
        download(url, PAYLOAD_SHA, tmp_path / "cat.jpg", context=client_ctx, timeout=5)
    msg = str(exc.value)
    assert "\n" not in msg and url in msg and "image_dir" in msg and "offline" in msg
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("path, expect", [("/missing.jpg", "HTTP 404"), ("/short.jpg", "connection closed after")])
def test_http_errors_and_short_reads(server, client_ctx, tmp_path, path, expect):
    url = f"{server}{path}"
    with pytest.raises(DiffxaiError, match=expect) as exc:
        download(url, PAYLOAD_SHA, tmp_path / "cat.jpg", context=client_ctx, timeout=10)
    assert url in str(exc.value) and "image_dir" in str(exc.value) and "\n" not in str(exc.value)
    assert _leftovers(tmp_path) == []


def test_untrusted_certificate_is_refused(server, tmp_path, monkeypatch):
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(DiffxaiError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        download(f"{server}/cat.jpg", PAYLOAD_SHA, tmp_path / "cat.jpg", timeout=10)  # default trust store
    assert _leftovers(tmp_path) == []


def test_size_cap(server, client_ctx, tmp_path):
    with pytest.raises(DiffxaiError, match="exceeds 100 bytes"):
        download(f"{server}/cat.jpg", PAYLOAD_SHA, tmp_path / "cat.jpg", context=client_ctx, max_bytes=100)
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- fetch_class_image
def test_fetch_class_image_prefers_image_dir(tmp_path):
    info = resolve_class("n02123394")
    (tmp_path / "n02123394_cat.JPEG").write_bytes(b"x")
    path, source = fetch_class_image(info, tmp_path, tmp_path / "cache")
    assert path == tmp_path / "n02123394_cat.JPEG" and source == str(path)
    assert not (tmp_path / "cache").exists()


def test_fetch_class_image_downloads_and_reuses_cache(server, client_ctx, tmp_path):
    info = dataclasses.replace(resolve_class("n02123394"), url=f"{server}/cat.jpg", sha256=PAYLOAD_SHA)
    cache = tmp_path / "cache"
    path, source = fetch_class_image(info, None, cache, context=client_ctx, timeout=10)
    assert path == cache / "n02123394.jpg" and source == info.url
    assert path.read_bytes() == PAYLOAD
    # a cache hit needs no network: point the URL at a dead port
    offline = dataclasses.replace(info, url=f"https://127.0.0.1:{_closed_port()}/cat.jpg")
    assert fetch_class_image(offline, "", cache, context=client_ctx)[0] == path
    # a corrupted cache file is replaced by a fresh download
    path.write_bytes(b"corrupt")
    fetch_class_image(info, None, cache, context=client_ctx, timeout=10)
    assert path.read_bytes() == PAYLOAD


def test_fetch_class_image_offline_says_how_to_set_image_dir(client_ctx, tmp_path):
    info = dataclasses.replace(resolve_class("n02123394"), url=f"https://127.0.0.1:{_closed_port()}/cat.jpg")
    with pytest.raises(DiffxaiError) as exc:
        fetch_class_image(info, None, tmp_path, context=client_ctx, timeout=5)
    msg = str(exc.value)
    assert "\n" not in msg and "--config image_dir=PATH" in msg
    with pytest.raises(DiffxaiError, match=r"--config image_dir=PATH"):
        fetch_class_image(dataclasses.replace(info, url=""), None, tmp_path)
    with pytest.raises(DiffxaiError, match=r"--config image_dir=PATH"):
        fetch_class_image(info, None, None)
