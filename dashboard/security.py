"""What every response of the dashboard passes through: the Host allowlist and the security headers.

**Host allowlist (DNS rebinding).** A web page on ``evil.example`` can point its own name at
127.0.0.1 and then read ``http://evil.example:8050/`` from the visitor's browser as same-origin:
the browser sends ``Host: evil.example``. The dashboard answers only the names it is known by: the
loopback names (``localhost``, ``127.0.0.1``, ``[::1]``, with any port), the address it is bound to
when that is a concrete address, and the names the operator adds (``--allowed-host``; ``*.example.com``
for a domain's subdomains, ``*`` for any name). Anything else gets ``400`` before the request reaches
Flask, with or without a token. ``/healthz`` is exempt (probes send the pod's address; it tells
nothing about the data).

**Headers.** Every response carries ``X-Frame-Options: DENY``, a Content-Security-Policy (scripts
only from the dashboard itself plus the hashes of Dash's own inline scripts; no framing; no
plugins), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
``Cross-Origin-Resource-Policy: same-origin``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

#: The names a loopback-bound dashboard answers to by default.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Bind addresses that mean "every interface": no client names the server by them.
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (names compared, nothing bound here)
#: Paths answered whatever the Host header says.
HOST_EXEMPT_PATHS = frozenset({"/healthz"})

_REFUSAL = (
    b"unknown Host: this dashboard answers only its allowed host names "
    b"(cutstream dashboard --allowed-host NAME)\n"
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def host_name(header: str | None) -> str | None:
    """The name part of a ``Host`` header, lower-case, without port or trailing dot (None: unreadable).

    ``"Example.COM:8050"`` → ``"example.com"``, ``"[::1]:8050"`` → ``"::1"``.
    """
    if not header or len(header) > 300:
        return None
    text = header.strip().lower()
    if text.startswith("["):
        name, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
        return name
    name, _, port = text.partition(":")
    if port and not port.isdigit():
        return None
    name = name.rstrip(".")
    if not name or any(not (c.isalnum() or c in "-._") for c in name):
        return None
    return name


class HostAllowlist:
    """The names the dashboard answers; ``"*"`` = any, ``"*.example.com"`` = its subdomains."""

    def __init__(self, names: Iterable[str]) -> None:
        exact: set[str] = set()
        suffixes: list[str] = []
        self.any = False
        for raw in names:
            name = raw.strip().lower()
            if name == "*":
                self.any = True
            elif name.startswith("*."):
                suffixes.append(name[1:].rstrip("."))
            elif name:
                parsed = host_name(name if not _is_ipv6(name) else f"[{name}]")
                if parsed is None:
                    raise ValueError(f"{raw!r} is not a host name or address")
                exact.add(parsed)
        self.exact = frozenset(exact)
        self.suffixes = tuple(suffixes)

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        name = host_name(header)
        if name is None:
            return False
        return name in self.exact or any(name.endswith(s) for s in self.suffixes)

    def __repr__(self) -> str:
        names = sorted(self.exact) + [f"*{s}" for s in self.suffixes] + (["*"] if self.any else [])
        return f"HostAllowlist({names})"


def _is_ipv6(name: str) -> bool:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> HostAllowlist:
    """Loopback names, the bound address (unless it is a wildcard such as 0.0.0.0) and ``extra``.

    Raises:
        ValueError: an entry of ``extra`` that is not a host name, an address or a ``*`` pattern.
    """
    names = set(LOOPBACK_HOSTS)
    bind = bind_host.strip().strip("[]")
    if bind not in WILDCARD_BINDS:
        names.add(bind)
    return HostAllowlist([*names, *extra])


def content_security_policy(script_hashes: Iterable[str]) -> str:
    """The page's CSP: scripts from this origin and Dash's own inline scripts (by hash), no framing.

    Styles allow ``'unsafe-inline'``: Dash's components and plotly.js style elements at run time
    (a style cannot run script). Images allow ``data:`` and ``blob:`` (plotly's mode bar and its
    image download).
    """
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *script_hashes],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def security_headers(csp: str) -> list[tuple[str, str]]:
    """The headers every response carries."""
    return [
        ("Content-Security-Policy", csp),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ]


class Guard:
    """WSGI middleware in front of the Flask app: refuse unknown Hosts, add the security headers.

    It sits outside Flask, so its answers and headers cover every response: pages, assets,
    callbacks, Flask's own error pages and the token check's 401.
    """

    def __init__(self, app: WsgiApp, allowlist: HostAllowlist, headers: list[tuple[str, str]]) -> None:
        self.app = app
        self.allowlist = allowlist
        self.headers = headers
        self._names = {name.lower() for name, _ in headers}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST")
        if environ.get("PATH_INFO") not in HOST_EXEMPT_PATHS and not self.allowlist.allows(host):
            logger.info(
                "dashboard request refused: unknown host=%r path=%r remote=%s",
                (host or "")[:100],
                (environ.get("PATH_INFO") or "")[:100],
                environ.get("REMOTE_ADDR"),
            )
            start_response(
                "400 Bad Request",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(_REFUSAL))),
                    *self.headers,
                ],
            )
            return [_REFUSAL]

        def with_headers(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() not in self._names]
            return start_response(status, [*kept, *self.headers], *exc_info)

        return self.app(environ, with_headers)
