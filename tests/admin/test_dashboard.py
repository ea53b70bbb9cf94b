"""The dashboard's files and the security headers, over ASGI (the browser tests drive the page).

The page must run under its own Content-Security-Policy: no inline script or style, every
file it names served from the package, and the whole page under 300 KB uncompressed.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import trio.testing

from admin.dashboard import DashboardAssets, page_policy
from tests.admin.helpers import admin_fleet, client

PAGE_BUDGET = 300 * 1024


class _Page(HTMLParser):
    """What index.html loads, and anything inline the policy would block."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "style" in values or any(name.startswith("on") for name in values):
            self.inline.append(f"<{tag}> with {sorted(values)}")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            if values.get("src"):
                self.loads.append(str(values["src"]))
            else:
                self._in_script = True
        if tag == "link" and values.get("href"):
            self.loads.append(str(values["href"]))

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


async def test_the_page_is_served_with_its_policy_and_loads_only_its_own_files(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin, client(admin.app) as anonymous:
        page = await anonymous.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "style-src 'self';" in policy
        assert "frame-ancestors 'none'" in policy
        assert "connect-src 'self' ws://admin.test wss://admin.test;" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        parsed = _Page()
        parsed.feed(page.text)
        assert parsed.inline == []
        assert "/static/js/app.js" in parsed.loads
        assert "/static/vendor/uplot/uPlot.iife.min.js" in parsed.loads
        for path in parsed.loads:
            asset = await anonymous.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["x-content-type-options"] == "nosniff"


async def test_every_module_the_scripts_import_is_served_as_javascript(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    names = DashboardAssets.load().names()
    modules = [name for name in names if name.startswith("js/")]
    assert "js/app.js" in modules
    async with admin_fleet(tmp_path / "a.db", [1]) as admin, client(admin.app) as anonymous:
        for name in modules:
            answer = await anonymous.get(f"/static/{name}")
            # A module served as anything but JavaScript is refused by the browser.
            assert answer.headers["content-type"] == "text/javascript; charset=utf-8", name
            # Static imports and the views imported when first shown (import("./x.js")).
            imported_names = re.findall(r'(?:from |import\()"\./([\w.-]+\.js)"', answer.text)
            for imported in imported_names:
                assert f"js/{imported}" in names, (name, imported)
            # Markup is built with DOM calls: nothing the API returns can become HTML.
            assert "innerHTML" not in answer.text, name
        css = await anonymous.get("/static/app.css")
        assert css.headers["content-type"] == "text/css; charset=utf-8"


async def test_files_are_revalidated_with_their_etag(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin, client(admin.app) as anonymous:
        first = await anonymous.get("/static/js/app.js")
        assert first.headers["cache-control"] == "no-cache"
        etag = first.headers["etag"]
        again = await anonymous.get("/static/js/app.js", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        changed = await anonymous.get("/static/js/app.js", headers={"If-None-Match": '"other"'})
        assert changed.status_code == 200 and changed.content == first.content


async def test_unknown_files_and_paths_outside_the_directory_are_404(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin, client(admin.app) as anonymous:
        for path in (
            "/static/nope.js",
            "/static/../dashboard.py",
            "/static/%2e%2e/dashboard.py",
            "/static/vendor/uplot/README.md",
            "/static/index.html",
        ):
            answer = await anonymous.get(path)
            assert answer.status_code == 404, path
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["content-security-policy"].startswith("default-src 'none'")


async def test_api_answers_and_refusals_carry_the_security_headers(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin, client(admin.app) as anonymous:
        answers = [
            await admin.http.get("/admin/system/bot-health/summary"),
            await anonymous.get("/admin/system/bot-health/summary"),  # 401
            await admin.http.get("/admin/bots/999"),  # 404
        ]
        assert [a.status_code for a in answers] == [200, 401, 404]
        for answer in answers:
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["content-security-policy"] == (
                "default-src 'none'; frame-ancestors 'none'"
            )
            # The fleet's data is not kept in caches.
            assert answer.headers["cache-control"] == "no-store"


def test_a_host_header_that_is_not_a_plain_host_is_not_copied_into_the_policy() -> None:
    assert "ws://127.0.0.1:8080 wss://127.0.0.1:8080;" in page_policy("127.0.0.1:8080")
    assert "ws://[::1]:8080" in page_policy("[::1]:8080")
    for hostile in ("evil; script-src *", "a b", "", None):
        policy = page_policy(hostile)
        assert "connect-src 'self';" in policy, hostile
        assert policy.count("script-src") == 1


def test_the_page_with_its_chart_library_stays_under_300_kb() -> None:
    assets = DashboardAssets.load()
    assert "vendor/uplot/uPlot.iife.min.js" in assets.names()
    assert assets.total_bytes() < PAGE_BUDGET
