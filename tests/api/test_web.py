"""The monitor's files as the API serves them (api/web.py): the page, its modules and the SDK's, each with the
Content-Security-Policy; nothing outside web/ and sdk/js/src, and nothing but the file types the page uses."""
from __future__ import annotations

import pytest


@pytest.fixture
def web(app):
    return app.test_client()


def directives(response) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split("; ")}


def test_the_page_its_modules_and_the_sdk_are_served_with_the_policy(web):
    page = web.get("/", headers={"Host": "monitor.example.com:8443"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'<script type="module" src="/web/js/main.js">' in page.data
    policy = directives(page)
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'", "ws://monitor.example.com:8443", "wss://monitor.example.com:8443"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Referrer-Policy"] == "no-referrer"
    for path, mimetype in (("/web/js/main.js", "text/javascript"), ("/web/app.css", "text/css"),
                           ("/sdk/index.js", "text/javascript"), ("/web/vendor/preact.module.js", "text/javascript")):
        response = web.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == mimetype and "Content-Security-Policy" in response.headers
        assert response.headers["Cache-Control"] == "no-cache" and response.headers["ETag"]
    # not counted against the API's rate limit, like /healthz
    assert "X-RateLimit-Limit" not in web.get("/web/js/main.js").headers


def test_a_host_header_that_is_not_a_host_never_reaches_the_policy(web):
    policy = directives(web.get("/", headers={"Host": "evil.example; script-src *"}))
    assert policy["connect-src"] == ["'self'"] and policy["script-src"] == ["'self'"]


@pytest.mark.parametrize("path", ["/web/../api/app.py", "/web/%2e%2e/api/app.py", "/sdk/../package.json",
                                  "/web/vendor/README.md", "/web/nope.js", "/sdk/nope.js", "/web/index.html.bak"])
def test_nothing_else_is_served(web, path):
    response = web.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
