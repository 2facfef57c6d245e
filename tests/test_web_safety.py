"""The web tools are safe by default: no fetch reaches a private, loopback, link-local or multicast address.

Traffic goes to loopback only: local servers that count the connections they accept (so a
refusal is seen as zero connections, not only as an error), and a stubbed resolver for names
that stand for the other address classes (the check refuses those before any connection).
"""

import ipaddress
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nanoagent.agent import Agent, ScriptedModel, builtin_tools, run_call, visit_webpage
from nanoagent.agent import netguard
from nanoagent.agent.netguard import ALLOW_PRIVATE_ENV, address_class
from nanoagent.agent.web import FetchError, fetch, make_visit_webpage
from nanoagent.chat import main as chat_main

SECRET = "<html><head><title>Router admin</title></head><body><p>admin password: hunter2</p></body></html>"


# ---------------------------------------------------------------- the address check itself

@pytest.mark.parametrize("address, kind", [
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"), ("fec0::1", "private"),    # unique local, site-local
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),                    # cloud metadata; IPv6 link-local
    ("100.64.0.1", "carrier-grade NAT"), ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("0.1.2.3", "private"), ("192.0.2.1", "private"), ("198.18.0.1", "private"),    # this network, docs, benchmarks
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),                # IPv4-mapped
    ("::ffff:169.254.169.254", "link-local"), ("::ffff:0.0.0.0", "unspecified"),
    ("::127.0.0.1", "loopback"),                                                     # IPv4-compatible
    ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"),          # NAT64
    ("2002:7f00:1::", "loopback"), ("2002:c0a8:101::1", "private"),                 # 6to4
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),                            # Teredo, client 127.0.0.1
])
def test_every_blocked_class_is_refused(address, kind):
    assert address_class(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.128.0.1", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_pass(address):
    assert address_class(ipaddress.ip_address(address)) is None


# ---------------------------------------------------------------- local servers that count connections

class CountingServer(ThreadingHTTPServer):
    """An HTTP server that counts every connection it accepts, before reading any request."""

    daemon_threads = True

    def __init__(self, address, family=socket.AF_INET):
        self.address_family = family
        self.connections, self.paths = 0, []
        super().__init__(address, Handler)

    def get_request(self):
        request = super().get_request()
        self.connections += 1
        return request


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        if self.path.startswith("/to/"):  # /to/<url>: a redirect there
            self.send_response(302)
            self.send_header("Location", urllib.parse.unquote(self.path[len("/to/"):]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = SECRET.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(address, family=socket.AF_INET):
    httpd = CountingServer(address, family)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def servers():
    """A counting server on 127.0.0.1 and, where the machine has IPv6, one on ::1."""
    v4 = serve(("127.0.0.1", 0))
    try:
        v6 = serve(("::1", 0), socket.AF_INET6)
    except OSError:
        v6 = None
    yield v4, v6
    for httpd in (v4, v6):
        if httpd:
            httpd.shutdown()
            httpd.server_close()


@pytest.fixture
def local(servers, monkeypatch):
    """The IPv4 counting server, its count reset; the opt-in setting cleared so the default is tested."""
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    for httpd in servers:
        if httpd:
            httpd.connections, httpd.paths = 0, []
    return servers[0]


def spellings(port):
    """Ways of writing a URL of the IPv4 server that the system's resolver turns into a loopback (or the
    unspecified) address: dotted, short, decimal, hex, octal, IPv4-mapped IPv6, 0.0.0.0, names."""
    return [f"http://{host}:{port}/admin" for host in
            ("127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0",
             "localhost", "LOCALHOST", "127.000.000.001")]


def test_the_spellings_all_reach_the_server_when_allowed(local):
    """Each spelling really is the local server: with the opt-in, each one connects (so zero below means refused)."""
    port = local.server_address[1]
    for url in spellings(port):
        assert "hunter2" in fetch(url, allow_private=True, timeout=5).body, url
    assert local.connections == len(spellings(port))


def test_every_loopback_spelling_is_refused_with_zero_connections(local):
    port = local.server_address[1]
    for url in spellings(port):
        with pytest.raises(FetchError, match="loopback|unspecified"):
            fetch(url, timeout=5)
        result = run_call({"name": "visit_webpage", "arguments": {"url": url}}, {"visit_webpage": visit_webpage})
        assert not result.ok and result.content.startswith("Error: visit_webpage failed: FetchError: refused")
        assert "\n" not in result.content and "hunter2" not in result.content
    assert local.connections == 0 and local.paths == []


def test_ipv6_loopback_is_refused_with_zero_connections(servers, local):
    v6 = servers[1]
    if v6 is None:
        pytest.skip("no IPv6 loopback on this machine")
    url = f"http://[::1]:{v6.server_address[1]}/admin"
    with pytest.raises(FetchError, match="::1 is a loopback address"):
        fetch(url, timeout=5)
    assert v6.connections == 0
    assert "hunter2" in fetch(url, allow_private=True, timeout=5).body and v6.connections == 1


# ---------------------------------------------------------------- names, by a stubbed resolver

def stub_resolver(table, real=netguard.resolve):
    """A stand-in for netguard.resolve: a name in `table` -> its addresses, in order; others as the system says."""
    def resolve(host, port):
        if host not in table:
            return real(host, port)
        addresses = [ipaddress.ip_address(a) for a in table[host]]
        return [(socket.AF_INET6, (str(a), port, 0, 0)) if a.version == 6 else (socket.AF_INET, (str(a), port))
                for a in addresses]
    return resolve


def test_a_redirect_to_loopback_is_refused_at_its_hop(local, monkeypatch):
    """public.example stands for a public site (served here from loopback and let through by name):
    its redirect to the local service is refused, and only the first hop ever connects."""
    port = local.server_address[1]
    monkeypatch.setattr(netguard, "resolve", stub_resolver({"public.example": ["127.0.0.1"]}))
    real_refusal = netguard.refusal
    monkeypatch.setattr(netguard, "refusal",
                        lambda host, ip: None if host == "public.example" else real_refusal(host, ip))
    for target in spellings(port):
        with pytest.raises(FetchError, match="refused to visit http://[^ ]+/admin"):
            fetch(f"http://public.example:{port}/to/{target}", timeout=5)
    assert local.connections == len(spellings(port))  # the first hops only
    assert all(path.startswith("/to/") for path in local.paths)


NAMES = {
    "metadata.example": (["169.254.169.254"], "link-local"),
    "router.example": (["192.168.1.1"], "private"),
    "office.example": (["10.0.0.7"], "private"),
    "isp.example": (["100.64.12.1"], "carrier-grade NAT"),
    "group.example": (["239.1.2.3"], "multicast"),
    "nothing.example": (["0.0.0.0"], "unspecified"),
    "v6-lan.example": (["fd00::5"], "private"),
    "v6-link.example": (["fe80::1"], "link-local"),
    "mapped.example": (["::ffff:192.168.0.1"], "private"),
    "nat64.example": (["64:ff9b::a9fe:a9fe"], "link-local"),
    "rebind.example": (["93.184.216.34", "127.0.0.1"], "loopback"),  # one public, one loopback: refused
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_names_resolving_to_blocked_addresses_are_refused_before_connecting(name, monkeypatch):
    addresses, kind = NAMES[name]
    monkeypatch.setattr(netguard, "resolve", stub_resolver({name: addresses}))
    opened = []
    monkeypatch.setattr(netguard, "open_socket", lambda *a: opened.append(a) or pytest.fail("connected"))
    with pytest.raises(FetchError, match=f"{name} resolves to [^ ]+, an? {kind} address"):
        fetch(f"http://{name}/latest/meta-data/")
    assert opened == []


def test_the_connection_goes_to_the_address_checked_with_one_lookup(local, monkeypatch):
    """A DNS server that answers differently the second time gets no second question: the socket
    opens to the first (checked) answer."""
    port = local.server_address[1]
    answers = iter([["127.0.0.1"], ["93.184.216.34"]])  # a second lookup would go somewhere public
    lookups = []

    def resolve(host, port):
        lookups.append(host)
        return stub_resolver({host: next(answers)})(host, port)
    monkeypatch.setattr(netguard, "resolve", resolve)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("a second lookup"))
    assert "hunter2" in fetch(f"http://changing.example:{port}/admin", allow_private=True, timeout=5).body
    assert lookups == ["changing.example"] and local.connections == 1


def test_each_redirect_hop_is_looked_up_once(local, monkeypatch):
    port = local.server_address[1]
    calls = []
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    fetch(f"http://localhost:{port}/to/http://127.0.0.1:{port}/page", allow_private=True, timeout=5)
    assert calls == ["localhost", "127.0.0.1"] and local.connections == 2


# ---------------------------------------------------------------- the opt-in

def test_the_opt_in_lets_the_agent_reach_a_local_service(local, monkeypatch):
    url = f"http://127.0.0.1:{local.server_address[1]}/admin"
    reply = '<tool_call>[{"name": "visit_webpage", "arguments": {"url": "%s"}}]</tool_call>' % url

    def tool_result(**options):
        agent = Agent(ScriptedModel([reply, "done"]), tools=["visit_webpage"], **options)
        return next(m["content"] for m in agent.run("read it").messages if m["role"] == "tool")

    assert "refused" in tool_result() and local.connections == 0                 # the default
    assert "hunter2" in tool_result(allow_private=True) and local.connections == 1
    agent = Agent(ScriptedModel([reply, "done"]), tools=[visit_webpage], allow_private=True)  # the Tool itself
    assert "hunter2" in next(m["content"] for m in agent.run("x").messages if m["role"] == "tool")
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")                                   # the environment's setting
    assert "hunter2" in tool_result() and "hunter2" in visit_webpage(url)
    assert "refused" in tool_result(allow_private=False)                          # an explicit no wins
    assert local.connections == 4


def test_the_command_line_flag(local):
    url = f"http://127.0.0.1:{local.server_address[1]}/admin"
    [allowed] = builtin_tools(["visit_webpage"], allow_private=True)
    assert "hunter2" in allowed(url)
    [default] = builtin_tools(["visit_webpage"])
    with pytest.raises(FetchError, match="refused"):
        default(url)
    assert local.connections == 1
    with pytest.raises(SystemExit):  # the flag is for visit_webpage; refused before any model loads
        chat_main(["--tools", "calculator", "--allow-private-urls"])


def test_the_schema_the_model_sees_is_unchanged():
    assert make_visit_webpage(allow_private=True).schema == visit_webpage.schema
    assert json.loads(json.dumps(visit_webpage.schema))["parameters"]["required"] == ["url"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "ftp://example.com/x"])
def test_other_schemes_are_refused_as_before(url, local):
    for allow in (None, True):
        with pytest.raises(FetchError, match="only http and https"):
            fetch(url, allow_private=allow)
    assert local.connections == 0
