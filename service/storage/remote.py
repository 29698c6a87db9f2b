"""Audio from `https://` source URLs, fetched without opening a path into the service's own network (SSRF).

Every hop (the URL and each redirect, at most `MAX_REDIRECTS`) is checked the same way: scheme, no userinfo,
then the host is resolved here and refused if any address is internal (loopback, private, link-local,
multicast, reserved, unspecified, carrier-grade NAT, IPv4-mapped forms of these, cloud metadata) unless the
allowlist names the host or the address. The request then goes to the vetted IP itself, with the original
`Host` header and TLS SNI/certificate checks against the hostname, so a second DNS answer cannot redirect it
(DNS rebinding). Size and total time are bounded while streaming; the target file is removed on any failure.
At most `max_url_downloads` run at once (each holds a connection, a file and up to its time limit): one more is
refused at once with 429 `too_many_downloads`, not queued behind them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.config import get_settings
from service.storage.sources import SourceError

MAX_URL_CHARS = 2048
MAX_REDIRECTS = 5
CHUNK_BYTES = 1024 * 1024
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[..., Awaitable[list[tuple[Any, ...]]]]

# Instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba): refused even where a broader
# allowlist entry (a hostname or a CIDR wider than the one address) would admit them.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


class FetchError(SourceError):
    """A source URL that is malformed or forbidden (422), names nothing (404), is too large (413), or comes
    while every download slot is taken (429)."""


class _Slots:
    """Downloads in progress, process-wide (every route's URL sources come through `fetch_url`)."""

    def __init__(self) -> None:
        self.active = 0

    @contextlib.contextmanager
    def take(self, limit: int) -> Iterator[None]:
        if self.active >= limit:  # checked and taken with no await between: one event loop, no race
            raise FetchError(
                429,
                "too_many_downloads",
                f"{self.active} source URLs are downloading (limit {limit}, MAX_URL_DOWNLOADS); retry later",
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


DOWNLOADS = _Slots()


@dataclass(frozen=True)
class _Policy:
    allow_http: bool
    hosts: frozenset[str]
    networks: tuple[Network, ...]


def _policy(allow_http: bool, allowlist: Sequence[str]) -> _Policy:
    hosts: set[str] = set()
    networks: list[Network] = []
    for entry in allowlist:
        entry = entry.strip().strip("[]")
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower().rstrip("."))
    return _Policy(allow_http, frozenset(hosts), tuple(networks))


def address_class(ip: Address) -> str | None:
    """The class that makes `ip` off limits ('loopback', 'private', ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (found := address_class(embedded)):
            return found
    checks = (
        (ip in METADATA, "cloud metadata"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT, "carrier-grade NAT"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-public"),
    )
    return next((name for hit, name in checks if hit), None)


def _allowed(ip: Address, host: str, policy: _Policy) -> bool:
    """Whether the allowlist admits `ip` for `host` (metadata addresses only by an exact single-address entry)."""
    plain = (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip
    nets = [n for n in policy.networks if n.version == plain.version and plain in n]
    if plain in METADATA or ip in METADATA:
        return any(n.num_addresses == 1 for n in nets)
    return host in policy.hosts or bool(nets)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_url(url: httpx.URL | str, policy: _Policy) -> httpx.URL:
    """Parse one hop's URL and apply the rules that need no network: scheme, userinfo, host, length."""
    try:
        if len(str(url)) > MAX_URL_CHARS:
            raise FetchError(422, "invalid_source", f"the source URL is longer than {MAX_URL_CHARS} characters")
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError(422, "invalid_source", "the source is not a valid URL") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parsed.scheme not in schemes:
        raise FetchError(422, "invalid_source", f"source URLs must use {' or '.join(schemes)}")
    if parsed.userinfo:
        raise FetchError(422, "invalid_source", "source URLs may not carry credentials (user:password@)")
    host = parsed.raw_host.decode("ascii", "replace")
    if not HOSTNAME.fullmatch(host) and not _is_ip(host):
        raise FetchError(422, "invalid_source", "the source URL has no valid host")
    return parsed.copy_with(fragment=None)


async def _vet(host: str, port: int, policy: _Policy, resolve: Resolver) -> list[str]:
    """Resolve `host` once and return its addresses, refusing it if any address is off limits."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await resolve(host, port, type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            raise FetchError(422, "source_unavailable", f"the source host {host} does not resolve") from None
    name = host.lower().rstrip(".")
    for ip in addresses:
        if (kind := address_class(ip)) and not _allowed(ip, name, policy):
            raise FetchError(422, "forbidden_address", f"the source host {host} resolves to a {kind} address")
    return list(dict.fromkeys(str(ip) for ip in addresses))


async def _open(url: httpx.URL, ips: list[str], client: httpx.AsyncClient) -> httpx.Response:
    """GET `url` from the first vetted address that accepts a connection, never re-resolving the name."""
    host = url.raw_host.decode("ascii")
    headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
    for ip in ips[:-1]:
        with contextlib.suppress(httpx.ConnectError):
            return await client.send(_request(client, url, ip, host, headers), stream=True)
    return await client.send(_request(client, url, ips[-1], host, headers), stream=True)


def _request(client: httpx.AsyncClient, url: httpx.URL, ip: str, host: str, headers: dict[str, str]) -> httpx.Request:
    # The URL names the vetted IP (httpcore connects there); Host and TLS SNI/verification use the name.
    return client.build_request("GET", url.copy_with(host=ip), headers=headers, extensions={"sni_hostname": host})


async def _save(response: httpx.Response, target: Path, max_bytes: int) -> int:
    """Stream the body into `target` (fsynced), refusing it as soon as it is known to exceed `max_bytes`."""
    declared = response.headers.get("content-length", "")
    too_large = FetchError(413, "file_too_large", f"the source is larger than {max_bytes} bytes")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    written = 0
    with target.open("wb") as out:
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            written += len(chunk)
            if written > max_bytes:
                raise too_large
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return written


async def _fetch(
    url: str,
    target: Path,
    max_bytes: int,
    policy: _Policy,
    resolve: Resolver,
    verify: ssl.SSLContext | bool,
    timeout_s: float,
) -> tuple[int, str]:
    current = _check_url(url, policy)
    for _hop in range(MAX_REDIRECTS + 1):
        ips = await _vet(current.raw_host.decode("ascii"), current.port or _port(current), policy, resolve)
        # A fresh client per hop: a pooled TLS connection, verified for one name, must not serve another.
        transport = httpx.AsyncHTTPTransport(verify=verify, trust_env=False, retries=0)
        async with httpx.AsyncClient(transport=transport, timeout=timeout_s, trust_env=False) as session:
            response = await _open(current, ips, session)
            try:
                if response.is_redirect:
                    current = _check_url(current.join(response.headers["location"]), policy)
                    continue
                if response.status_code == 404:
                    raise FetchError(404, "source_not_found", "the source URL answered HTTP 404")
                if not response.is_success:
                    status = response.status_code
                    raise FetchError(422, "source_unavailable", f"the source URL answered HTTP {status}")
                return await _save(response, target, max_bytes), str(current)
            finally:
                await response.aclose()
    raise FetchError(422, "too_many_redirects", f"the source URL redirected more than {MAX_REDIRECTS} times")


def _port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


async def fetch_url(
    url: str,
    target: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_http: bool = False,
    allowlist: Sequence[str] = (),
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_concurrent: int | None = None,
) -> tuple[int, str]:
    """Download `url` into `target` under the rules above; returns (bytes written, final URL after redirects).

    `resolver` has `loop.getaddrinfo`'s signature (the default); `ssl_context` replaces the default trust store
    (certifi). `timeout_s` bounds everything: resolution, connects, redirects and the whole download.
    `max_concurrent` (default: the `max_url_downloads` setting) bounds downloads at once: 429 beyond."""
    target = Path(target)
    policy = _policy(allow_http, allowlist)
    resolve = resolver or asyncio.get_running_loop().getaddrinfo
    limit = max_concurrent if max_concurrent is not None else get_settings().gateway.max_url_downloads
    with DOWNLOADS.take(limit):
        return await _fetch_bounded(url, target, max_bytes, timeout_s, policy, resolve, ssl_context)


async def _fetch_bounded(
    url: str,
    target: Path,
    max_bytes: int,
    timeout_s: float,
    policy: _Policy,
    resolve: Resolver,
    ssl_context: ssl.SSLContext | None,
) -> tuple[int, str]:
    try:
        async with asyncio.timeout(timeout_s):
            try:
                return await _fetch(url, target, max_bytes, policy, resolve, ssl_context or True, timeout_s)
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.HTTPError as exc:
                detail = str(exc)[:200] or type(exc).__name__
                raise FetchError(422, "source_unavailable", f"could not download the source: {detail}") from None
    except TimeoutError:
        target.unlink(missing_ok=True)
        raise FetchError(422, "source_timeout", f"the source did not download within {timeout_s:g} s") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
