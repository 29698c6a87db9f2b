"""Source URLs: scheme and userinfo rules, internal addresses refused (resolve-then-connect, DNS rebinding),
redirects re-checked per hop, size and time limits, TLS SNI/verification against the hostname. Local servers
on 127.0.0.1 only; no internet."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from service.storage.remote import FetchError, address_class, fetch_url

BODY = bytes(range(256)) * 4  # 1024 bytes


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        headers = {"Content_Length": str(len(body)), **headers}
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers["Host"], self.connection.getsockname()[0]))
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        try:
            if parts[0] == "ok":
                self._send(200, BODY)
            elif parts[0] == "redirect":
                hops = int(parts[1])
                self._send(302, Location=f"/redirect/{hops - 1}" if hops else "/ok")
            elif parts[0] == "to":
                self._send(302, Location=parse_qs(url.query)["url"][0])
            elif parts[0] == "missing":
                self._send(404, b"no")
            elif parts[0] == "broken":
                self._send(500, b"oops")
            elif parts[0] == "declared-huge":  # says 1 GB up front; sends little
                self._send(200, BODY, Content_Length=str(10**9))
            elif parts[0] == "chunked-huge":  # no Content-Length: 64 chunks of 1 KiB
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"400\r\n" + BODY + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif parts[0] == "close-huge":  # HTTP/1.0 style: body ends when the connection closes
                self.wfile.write(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + BODY * 64)
                self.close_connection = True
            elif parts[0] == "slow-headers":
                self.server.stop.wait(3)
                self._send(200, BODY)
            elif parts[0] == "trickle":  # a byte every 50 ms: each read is quick, the whole is slow
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    if self.server.stop.wait(0.05):
                        return
            else:
                self._send(400)
        except OSError:  # the client gave up
            self.close_connection = True


class Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _serve(context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Iterator[http.server.ThreadingHTTPServer]:
    server = (Server6 if ":" in host else http.server.ThreadingHTTPServer)((host, 0), Handler)
    server.daemon_threads = True
    server.seen, server.stop = [], threading.Event()
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    yield from _serve()


@pytest.fixture(scope="module")
def tls() -> dict:
    """A CA and a leaf certificate for `media.test` only (no IP SAN: verification must use the name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test ca", ca_key, "test ca", ca_key, True)
    leaf = cert("media.test", leaf_key, "test ca", ca_key, False)
    pem = serialization.Encoding.PEM
    return {
        "ca": ca.public_bytes(pem).decode(),
        "chain": leaf.public_bytes(pem) + ca.public_bytes(pem),
        "key": leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }


@pytest.fixture(scope="module")
def tls_server(tls: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[http.server.ThreadingHTTPServer]:
    folder = tmp_path_factory.mktemp("tls")
    (folder / "chain.pem").write_bytes(tls["chain"])
    (folder / "key.pem").write_bytes(tls["key"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "chain.pem", folder / "key.pem")
    snis: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: snis.append(name)
    for server in _serve(context):
        server.snis = snis
        yield server


def resolver(mapping: dict[str, list[str]], calls: list[str] | None = None):
    """A fake `getaddrinfo`: each call to a host pops its next answer list (the last one repeats)."""

    async def resolve(host: str, port: int, **_: object) -> list[tuple]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        ips = mapping[host]
        if isinstance(ips[0], list):  # a sequence of answers
            ips = ips.pop(0) if len(ips) > 1 else ips[0]
        family = socket.AF_INET6 if ":" in ips[0] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

    return resolve


def fetch(url: str, target: Path, **kwargs):
    kwargs = {"max_bytes": 1 << 20, "timeout_s": 5.0, **kwargs}
    return asyncio.run(fetch_url(url, target, **kwargs))


def refused(url: str, target: Path, status: int, code: str, **kwargs) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, target, **kwargs)
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    assert not target.exists()
    return info.value


def base(server: http.server.ThreadingHTTPServer, host: str = "127.0.0.1", scheme: str = "http") -> str:
    return f"{scheme}://{host}:{server.server_address[1]}"


LOCAL = {"allow_http": True, "allowlist": ["127.0.0.1"]}


def test_allowlisted_loopback_downloads(server, tmp_path: Path) -> None:
    target = tmp_path / "a.mp3"
    size, final = fetch(f"{base(server)}/ok", target, **LOCAL)
    assert (size, final, target.read_bytes()) == (len(BODY), f"{base(server)}/ok", BODY)
    size, _ = fetch(f"{base(server)}/ok", target, allow_http=True, allowlist=["127.0.0.0/8"])
    assert size == len(BODY)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.mp3",  # http without allow_http
        "ftp://example.com/a.mp3",
        "file:///etc/passwd",
        "https://user:pw@example.com/a.mp3",
        "https://user@example.com/a.mp3",
        "https:///a.mp3",
        "https://exa mple.com/a.mp3",
        "https://a..b/a.mp3",
        "https://example.com/" + "a" * 2048,
        "not a url",
    ],
)
def test_invalid_urls(url: str, tmp_path: Path) -> None:
    refused(url, tmp_path / "a", 422, "invalid_source", resolver=resolver({}))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "2130706433"])
def test_loopback_refused_without_allowlist(server, host: str, tmp_path: Path) -> None:
    port = server.server_address[1]
    error = refused(f"http://{host}:{port}/ok", tmp_path / "a", 422, "forbidden_address", allow_http=True)
    assert "loopback" in error.message or "unspecified" in error.message


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
    ],
)
def test_internal_addresses_refused(ip: str, kind: str, tmp_path: Path) -> None:
    assert address_class(ipaddress.ip_address(ip)) == kind
    error = refused(
        "https://evil.test/a.mp3", tmp_path / "a", 422, "forbidden_address", resolver=resolver({"evil.test": [ip]})
    )
    assert f"resolves to a {kind} address" in error.message


def test_public_addresses_pass_the_classifier() -> None:
    for ip in ("8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "100.128.0.1"):
        assert address_class(ipaddress.ip_address(ip)) is None


def test_any_internal_address_refuses_the_host(tmp_path: Path) -> None:
    resolve = resolver({"mixed.test": ["8.8.8.8", "10.1.2.3"]})
    refused("https://mixed.test/a.mp3", tmp_path / "a", 422, "forbidden_address", resolver=resolve)


def test_metadata_needs_an_exact_allowlist_entry(tmp_path: Path) -> None:
    resolve = resolver({"meta.test": ["169.254.169.254"]})
    for allowlist in (["meta.test"], ["169.254.0.0/16"]):
        refused("https://meta.test/x", tmp_path / "a", 422, "forbidden_address", resolver=resolve, allowlist=allowlist)


def test_unresolvable_host(tmp_path: Path) -> None:
    refused("https://nowhere.test/a.mp3", tmp_path / "a", 422, "source_unavailable", resolver=resolver({}))


def test_allowlisted_hostname_connects_to_the_resolved_address(server, tmp_path: Path) -> None:
    port = server.server_address[1]
    resolve = resolver({"media.test": ["127.0.0.1"]})
    size, final = fetch(
        f"http://media.test:{port}/ok", tmp_path / "a", allow_http=True, allowlist=["MEDIA.test"], resolver=resolve
    )
    assert (size, final) == (len(BODY), f"http://media.test:{port}/ok")
    assert server.seen[-1] == ("/ok", f"media.test:{port}", "127.0.0.1")


def test_dns_rebinding_connects_to_the_vetted_address(server, tmp_path: Path) -> None:
    """First answer: the allowlisted 127.0.0.1; any later answer: 10.0.0.1. The name resolves once and the
    connection goes to 127.0.0.1 (the system resolver does not know `rebind.test` at all)."""
    port, calls = server.server_address[1], []
    resolve = resolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]}, calls)
    size, _ = fetch(f"http://rebind.test:{port}/ok", tmp_path / "a", **LOCAL, resolver=resolve)
    assert size == len(BODY)
    assert calls == ["rebind.test"]
    assert server.seen[-1] == ("/ok", f"rebind.test:{port}", "127.0.0.1")


def test_redirects_followed_and_rechecked(server, tmp_path: Path) -> None:
    size, final = fetch(f"{base(server)}/redirect/4", tmp_path / "a", **LOCAL)
    assert (size, final) == (len(BODY), f"{base(server)}/ok")  # 5 redirects: the limit
    refused(f"{base(server)}/redirect/5", tmp_path / "b", 422, "too_many_redirects", **LOCAL)


@pytest.mark.parametrize(
    ("location", "code"),
    [
        ("http://evil.test/a.mp3", "forbidden_address"),
        ("http://169.254.169.254/latest/meta-data/", "forbidden_address"),
        ("http://[::ffff:10.0.0.1]/x", "forbidden_address"),
        ("http://user:pw@127.0.0.1/x", "invalid_source"),
        ("ftp://127.0.0.1/x", "invalid_source"),
    ],
)
def test_redirect_to_a_forbidden_target_refused(server, location: str, code: str, tmp_path: Path) -> None:
    resolve = resolver({"evil.test": ["10.0.0.1"]})
    refused(f"{base(server)}/to?url={location}", tmp_path / "a", 422, code, **LOCAL, resolver=resolve)


def test_https_redirect_to_http_refused(tls_server, tls: dict, tmp_path: Path) -> None:
    port = tls_server.server_address[1]
    kwargs = {
        "allowlist": ["127.0.0.1"],
        "resolver": resolver({"media.test": ["127.0.0.1"]}),
        "ssl_context": ssl.create_default_context(cadata=tls["ca"]),
    }
    url = f"https://media.test:{port}/to?url=http://media.test:{port}/ok"
    refused(url, tmp_path / "a", 422, "invalid_source", **kwargs)


@pytest.mark.parametrize("path", ["declared-huge", "chunked-huge", "close-huge"])
def test_oversize_refused(server, path: str, tmp_path: Path) -> None:
    target = tmp_path / "a"
    target.write_bytes(b"stale")
    refused(f"{base(server)}/{path}", target, 413, "file_too_large", **LOCAL, max_bytes=10_000)


def test_exact_size_limit_passes(server, tmp_path: Path) -> None:
    assert fetch(f"{base(server)}/ok", tmp_path / "a", **LOCAL, max_bytes=len(BODY))[0] == len(BODY)
    refused(f"{base(server)}/ok", tmp_path / "b", 413, "file_too_large", **LOCAL, max_bytes=len(BODY) - 1)


@pytest.mark.parametrize("path", ["slow-headers", "trickle"])
def test_slow_source_times_out(server, path: str, tmp_path: Path) -> None:
    started = time.monotonic()
    refused(f"{base(server)}/{path}", tmp_path / "a", 422, "source_timeout", **LOCAL, timeout_s=0.5)
    assert time.monotonic() - started < 2


def test_upstream_errors(server, tmp_path: Path) -> None:
    refused(f"{base(server)}/missing", tmp_path / "a", 404, "source_not_found", **LOCAL)
    error = refused(f"{base(server)}/broken", tmp_path / "a", 422, "source_unavailable", **LOCAL)
    assert "500" in error.message


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused(f"http://127.0.0.1:{port}/ok", tmp_path / "a", 422, "source_unavailable", **LOCAL)


def test_tls_uses_the_hostname_for_sni_and_verification(tls_server, tls: dict, tmp_path: Path) -> None:
    port = tls_server.server_address[1]
    trust = ssl.create_default_context(cadata=tls["ca"])
    resolve = resolver({"media.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    kwargs = {"allowlist": ["127.0.0.1"], "resolver": resolve}
    size, final = fetch(f"https://media.test:{port}/ok", tmp_path / "a", **kwargs, ssl_context=trust)
    assert (size, final) == (len(BODY), f"https://media.test:{port}/ok")
    assert tls_server.snis[-1] == "media.test"
    assert tls_server.seen[-1] == ("/ok", f"media.test:{port}", "127.0.0.1")
    # The certificate names media.test only: another name on the same IP fails verification, as does the
    # default trust store (which does not know the test CA).
    refused(f"https://other.test:{port}/ok", tmp_path / "b", 422, "source_unavailable", **kwargs, ssl_context=trust)
    refused(f"https://media.test:{port}/ok", tmp_path / "c", 422, "source_unavailable", **kwargs)


def test_falls_back_to_the_next_vetted_address(server, tmp_path: Path) -> None:
    port = server.server_address[1]  # the server listens on 127.0.0.1 only: 127.0.0.2 refuses the connection
    resolve = resolver({"multi.test": ["127.0.0.2", "127.0.0.1"]})
    kwargs = {"allow_http": True, "allowlist": ["127.0.0.0/8"], "resolver": resolve}
    assert fetch(f"http://multi.test:{port}/ok", tmp_path / "a", **kwargs)[0] == len(BODY)
    assert server.seen[-1] == ("/ok", f"multi.test:{port}", "127.0.0.1")


def test_ipv6_vetted_address(tmp_path: Path) -> None:
    try:
        servers = _serve(host="::1")
        server = next(servers)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = server.server_address[1]
    kwargs = {"allow_http": True, "allowlist": ["::1"], "resolver": resolver({"v6.test": ["::1"]})}
    try:
        assert fetch(f"http://[::1]:{port}/ok", tmp_path / "a", **kwargs)[0] == len(BODY)
        assert fetch(f"http://v6.test:{port}/ok", tmp_path / "b", **kwargs)[0] == len(BODY)
        assert server.seen[-1] == ("/ok", f"v6.test:{port}", "::1")
    finally:
        next(servers, None)
