"""The API explorer at /api/docs: vendored Swagger UI (no CDN) with its own initializer file, served under a
Content-Security-Policy that allows no inline script or style and nothing from elsewhere, reading the OpenAPI
document whose bearerAuth scheme is what its Authorize dialog fills in."""
from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser

from api.web import WEB_DIR

BUNDLE = "/web/vendor/swagger-ui/swagger-ui-bundle.js"
STYLES = "/web/vendor/swagger-ui/swagger-ui.css"
INITIALIZER = "/web/js/docs.js"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        self.inline_script |= self._in_script and bool(data.strip())


def directives(response) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split("; ")}


def test_the_page_loads_only_its_own_files_under_a_policy_without_inline_code(client):
    page = client.get("/api/docs", headers={"Host": "ops.example.com:8443"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = Tags()
    html.feed(page.get_data(as_text=True))
    scripts = [attrs.get("src") for tag, attrs in html.tags if tag == "script"]
    styles = [attrs.get("href") for tag, attrs in html.tags if tag == "link" and attrs.get("rel") == "stylesheet"]
    assert scripts == [BUNDLE, INITIALIZER] and STYLES in styles
    assert not html.inline_script and not any("style" in attrs for _tag, attrs in html.tags)
    assert "style" not in [tag for tag, _attrs in html.tags]

    policy = directives(page)
    assert policy["default-src"] == ["'self'"] and policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'", "ws://ops.example.com:8443", "wss://ops.example.com:8443"]
    assert not any("unsafe" in value for values in policy.values() for value in values), policy
    # Swagger UI writes sanitised Markdown with innerHTML: Trusted Types only on the monitor's own page
    assert "require-trusted-types-for" not in policy
    assert "require-trusted-types-for" in directives(client.get("/"))
    for path, mimetype in ((BUNDLE, "text/javascript"), (STYLES, "text/css"), (INITIALIZER, "text/javascript"),
                           ("/web/docs.css", "text/css")):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == mimetype, path
        assert not re.search(rb"(?:src|href)=[\"']?(?:https?:)?//", response.data), f"{path} loads from elsewhere"


def test_the_initializer_reads_this_servers_document_and_keeps_tokens_out_of_storage(client):
    script = client.get(INITIALIZER).get_data(as_text=True)
    assert 'url: "/api/openapi.json"' in script
    assert "persistAuthorization: false" in script and "validatorUrl: null" in script
    assert "localStorage" not in script and "http" not in script


def test_the_document_offers_a_bearer_token_for_authorize(client):
    document = client.get("/api/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "The access_token from /api/auth/login"}
    assert document["paths"]["/api/auth/me"]["get"]["security"] == [{"bearerAuth": []}]
    assert "/api/docs" not in document["paths"]  # a page for people, not an operation


def test_the_vendored_files_are_the_ones_recorded_with_their_licence():
    record = (WEB_DIR / "vendor" / "README.md").read_text()
    assert re.search(r"`swagger-ui-dist`[^|]*\| 5\.35\.0 \| Apache-2\.0", record), record
    vendor = WEB_DIR / "vendor" / "swagger-ui"
    bundle = hashlib.sha256((vendor / "swagger-ui-bundle.js").read_bytes()).hexdigest()
    assert bundle in record  # unchanged from the package
    assert "Apache License" in (vendor / "LICENSE.swagger-ui").read_text()
    assert "sourceMappingURL" not in (vendor / "swagger-ui.css").read_text()  # the maps are not shipped
