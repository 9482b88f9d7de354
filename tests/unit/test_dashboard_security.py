"""Host header parsing and the allowlist's rules (the served behaviour is in
tests/integration/test_dashboard_http.py)."""

from __future__ import annotations

import pytest

from dashboard.security import HostAllowlist, allowed_hosts, content_security_policy, host_name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8050", "localhost"),
        ("localhost.", "localhost"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]:8050", "::1"),
        ("[::1]", "::1"),
        ("dash.example.com:443", "dash.example.com"),
        ("", None),
        (None, None),
        ("localhost:abc", None),
        ("[::1", None),
        ("[::1]x", None),
        ("[not-an-address]", None),
        ("a b", None),
        ("evil.example/path", None),
        ("x" * 301, None),
    ],
)
def test_host_name(header: str | None, name: str | None) -> None:
    assert host_name(header) == name


def test_loopback_by_default_and_the_bound_address_unless_it_is_a_wildcard() -> None:
    for bind in ("127.0.0.1", "0.0.0.0", "::", "[::]"):
        hosts = allowed_hosts(bind)
        assert hosts.allows("localhost:8050") and hosts.allows("[::1]:1") and hosts.allows("127.0.0.1")
        assert not hosts.allows("0.0.0.0:8050") and not hosts.allows("evil.example")
    lan = allowed_hosts("192.168.1.5")
    assert lan.allows("192.168.1.5:8050") and not lan.allows("192.168.1.6")
    assert allowed_hosts("fe80::1").allows("[fe80::1]:8050")


def test_patterns() -> None:
    hosts = HostAllowlist(["dash.example.com", "*.corp.example", "10.0.0.7", "::2"])
    assert hosts.allows("DASH.example.com:8443") and hosts.allows("a.b.corp.example")
    assert hosts.allows("10.0.0.7") and hosts.allows("[::2]:80")
    assert not hosts.allows("corp.example") and not hosts.allows("dash.example.com.evil.example")
    assert not hosts.allows("xcorp.example")
    assert HostAllowlist(["*"]).allows("anything.example") and HostAllowlist(["*"]).allows(None)
    with pytest.raises(ValueError, match="'dash/x' is not a host name"):
        HostAllowlist(["dash/x"])


def test_the_csp_allows_only_its_own_scripts_and_no_framing() -> None:
    csp = dict(d.split(" ", 1) for d in content_security_policy(["'sha256-abc='"]).split("; "))
    assert csp["script-src"] == "'self' 'sha256-abc='"
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert csp["default-src"] == "'self'" and csp["connect-src"] == "'self'"
