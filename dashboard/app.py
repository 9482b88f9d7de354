"""The Dash application: ``create_app(data_dir, refresh_ms, auth, allowed_hosts=...)``.

Every response passes :class:`dashboard.security.Guard` (Host allowlist, security headers); every
callback request passes :func:`dashboard.inputs.check_callback_request` and the callbacks'
converters (a malformed one is answered 400 in one line).

Access control: with a token, every request (pages, assets, callbacks) must carry it, as
``Authorization: Bearer <token>``, as the password of HTTP basic auth (any user name; the browser
asks for it), or once as ``?token=<token>`` on the page URL, which sets an HttpOnly session cookie.
``/healthz`` answers without a token and tells nothing about the data. The command line refuses to
bind to anything but loopback without a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from pathlib import Path

import flask
from dash import Dash

from dashboard import callbacks, inputs, layout, security

logger = logging.getLogger(__name__)

COOKIE = "cutstream_token"


def _token_ok(presented: str | None, token: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def _cookie_value(token: str) -> str:
    # the cookie holds a digest, not the token itself
    return hashlib.sha256(("cutstream-dashboard\x1f" + token).encode()).hexdigest()


def _presented_token(request: flask.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def install_auth(server: flask.Flask, token: str) -> None:
    """Require ``token`` on every request of ``server`` (see the module docstring)."""
    if not token:
        raise ValueError("an empty dashboard token protects nothing")
    cookie = _cookie_value(token)

    @server.before_request
    def _check() -> flask.Response | None:
        request = flask.request
        if request.path == "/healthz":
            return None
        if _token_ok(_presented_token(request), token):
            return None
        if _token_ok(request.cookies.get(COOKIE), cookie):
            return None
        if _token_ok(request.args.get("token"), token):
            flask.g.cutstream_set_cookie = True
            return None
        logger.info("dashboard request refused path=%s remote=%s", request.path, request.remote_addr)
        return flask.Response(
            "authentication required\n",
            401,
            {"WWW-Authenticate": 'Basic realm="cutstream dashboard", charset="UTF-8"'},
        )

    @server.after_request
    def _remember(response: flask.Response) -> flask.Response:
        if flask.g.get("cutstream_set_cookie"):
            response.set_cookie(
                COOKIE, cookie, httponly=True, samesite="Strict", secure=flask.request.is_secure
            )
        return response


def install_input_checks(app: Dash) -> None:
    """Answer a malformed ``/_dash-update-component`` request, or an InputError in a callback, with 400."""
    server = app.server
    server.config["MAX_CONTENT_LENGTH"] = inputs.MAX_BODY_BYTES  # larger bodies: 413, unread
    update_path = f"{app.config.routes_pathname_prefix}_dash-update-component"

    @server.before_request
    def _check_callback_request() -> None:
        request = flask.request
        if request.method != "POST" or request.path != update_path:
            return
        body = request.get_json(silent=True)
        if body is None:
            raise inputs.InputError("the body must be JSON (Content-Type: application/json)")
        inputs.check_callback_request(body, app.callback_map)

    @server.errorhandler(inputs.InputError)
    def _bad_input(exc: inputs.InputError) -> flask.Response:
        logger.info("dashboard request refused path=%s reason=%s", flask.request.path, exc)
        return flask.Response(f"bad request: {exc}\n", 400, {"Content-Type": "text/plain; charset=utf-8"})


def _warm_up(data_dir: Path) -> None:
    """Compute the default first page once, so that the first visitor finds the caches warm."""
    import sinks.query as q
    from dashboard import views

    try:
        for _name, query in views.first_page_parts(data_dir, views.DEFAULT_PERIOD):
            query()
    except q.QueryError as exc:
        logger.warning("dashboard warm-up failed data_dir=%s error=%s", data_dir, exc)


def create_app(
    data_dir: Path | str,
    refresh_ms: int = 5000,
    auth: str | None = None,
    metrics_urls: tuple[str, ...] = (),
    warm_up: bool = False,
    allowed_hosts: security.HostAllowlist | None = None,
) -> Dash:
    """The dashboard over ``<data_dir>/results`` (read through sinks.query only).

    Args:
        data_dir: the results directory root (``results/``, and ``alerts/`` when alerts are on).
        refresh_ms: live refresh interval of the page.
        auth: an access token; None = no authentication (loopback use only).
        metrics_urls: the workers' Prometheus endpoints, for the lag KPI (optional).
        warm_up: compute the default first page in a background thread now (the command does).
        allowed_hosts: the Host names answered (default: the loopback names only).
    """
    if refresh_ms < 250:
        raise ValueError("refresh_ms must be at least 250")
    app = Dash(__name__, title="cutstream", update_title="", serve_locally=True)
    app.layout = layout.build_layout(refresh_ms)
    callbacks.register(app, Path(data_dir), tuple(metrics_urls))
    server = app.server

    @server.route("/healthz")
    def _healthz() -> flask.Response:
        return flask.Response("ok\n", 200, {"Content-Type": "text/plain"})

    if auth:
        install_auth(server, auth)
    install_input_checks(app)
    # the CSP names Dash's inline scripts by hash: computed once every callback is registered
    headers = security.security_headers(security.content_security_policy(app.csp_hashes()))
    hosts = allowed_hosts if allowed_hosts is not None else security.allowed_hosts("127.0.0.1")
    server.wsgi_app = security.Guard(server.wsgi_app, hosts, headers)
    if warm_up:
        import threading

        threading.Thread(
            target=_warm_up, args=(Path(data_dir),), name="dashboard-warm-up", daemon=True
        ).start()
    return app
