"""Which network addresses the web tools may reach, and connecting only to those.

A page the agent reads can ask it to visit `http://127.0.0.1:8080/admin`,
`http://169.254.169.254/` (a cloud machine's metadata service) or a router at
`http://192.168.1.1/`, and a small model follows such text. So before each request (each
redirect hop too) the host is resolved once, every address it resolves to is checked,
and the connection is opened to one of those checked addresses: there is no second
lookup that a DNS server could answer differently (DNS rebinding).

Refused: unspecified, loopback, link-local, multicast, carrier-grade NAT, private,
reserved and other non-global addresses, IPv4 and IPv6, also when an IPv4 address rides
inside an IPv6 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
`64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`, Teredo). Spellings such as `127.1`,
`2130706433` or `0x7f000001` are caught because the resolver's answer is checked, not
the spelling. A user who wants the agent on a local service opts in with
`allow_private=True` (`--allow-private-urls` on the chat) or NANOAGENT_ALLOW_PRIVATE_URLS=1.
"""

import http.client
import ipaddress
import os
import socket
import ssl

ALLOW_PRIVATE_ENV = "NANOAGENT_ALLOW_PRIVATE_URLS"
CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598; not is_private before Python 3.13
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")             # deprecated ::a.b.c.d
NAT64 = ipaddress.ip_network("64:ff9b::/96")                # RFC 6052's well-known prefix


class RefusedAddress(ValueError):
    """A host that resolves to an address the web tools may not reach."""


def private_allowed(allow_private=None):
    """Whether private and local addresses may be reached: `allow_private` when given, else the
    NANOAGENT_ALLOW_PRIVATE_URLS setting (1, true, yes or on)."""
    if allow_private is not None:
        return bool(allow_private)
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------- the address check

def embedded_ipv4(ip):
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client), else None."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in NAT64 or ip in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # the last 32 bits
    return None


def address_class(ip):
    """An IPv4Address/IPv6Address -> the kind of address it is when the web tools may not reach it
    ("loopback", "private", ...), or None for a public address.

    The named classes are checked one by one because `is_global` alone misses some: on
    Python 3.11 a multicast address, `::ffff:127.0.0.1` and `64:ff9b::7f00:1` are all "global".
    """
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.version == 6:
        inner = embedded_ipv4(ip)
        if inner is not None:  # an IPv4 address inside: the IPv4 address decides
            return address_class(inner)
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in CARRIER_GRADE_NAT:
        return "carrier-grade NAT"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or (ip.version == 6 and ip.is_site_local):
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


def refusal(host, ip):
    """The one-line reason a host that resolves to `ip` is not visited, or None when it may be."""
    kind = address_class(ip)
    if kind is None:
        return None
    article = "an" if kind[0] in "aeiou" else "a"
    where = f"{ip} is" if host == str(ip) else f"{host} resolves to {ip},"
    return (f"{where} {article} {kind} address; private and local addresses are not visited "
            f"(a user can allow them with --allow-private-urls or {ALLOW_PRIVATE_ENV}=1)")


# ---------------------------------------------------------------- resolving once

def resolve(host, port):
    """host, port -> [(family, sockaddr)] for a TCP connection, from the system's resolver."""
    return [(family, sockaddr) for family, _, _, _, sockaddr in
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def checked_addresses(host, port, allow_private=None):
    """Resolve `host` once -> [(family, sockaddr)], every one of them allowed; RefusedAddress otherwise."""
    addresses = resolve(host, port)
    if not private_allowed(allow_private):
        for _, sockaddr in addresses:
            reason = refusal(host, ipaddress.ip_address(sockaddr[0].split("%")[0]))  # drop an IPv6 zone
            if reason:
                raise RefusedAddress(reason)
    return addresses


# ---------------------------------------------------------------- connecting to the checked addresses

def open_socket(addresses, timeout):
    """A TCP socket connected to the first of `addresses` [(family, sockaddr)] that answers."""
    error = OSError("no address to connect to")
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


class CheckedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to addresses resolved and checked beforehand (`connect` looks up nothing)."""

    def __init__(self, host, port, addresses, timeout):
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self):
        self.sock = open_socket(self.addresses, self.timeout)


class CheckedHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS: the socket goes to a checked address, while SNI and the certificate
    check use the host name."""

    def __init__(self, host, port, addresses, timeout):
        self.tls = ssl.create_default_context()  # certificate and host name checked
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.addresses = addresses

    def connect(self):
        self.sock = self.tls.wrap_socket(open_socket(self.addresses, self.timeout), server_hostname=self.host)


def open_connection(scheme, host, port, timeout, allow_private=None):
    """An unopened HTTP(S) connection to `host`, pinned to its checked addresses; RefusedAddress
    when the host resolves to an address that may not be reached (see the module docstring)."""
    addresses = checked_addresses(host, port, allow_private)
    kind = CheckedHTTPSConnection if scheme == "https" else CheckedHTTPConnection
    return kind(host, port, addresses, timeout)
