"""The dashboard benchmark at a tiny size (3 bots, one page load), so it does not rot."""

from __future__ import annotations

import pytest

from bench import dashboard


@pytest.mark.skipif(dashboard.chromium_path() is None, reason=dashboard.CHROMIUM_MISSING)
def test_the_dashboard_benchmark_times_the_overview_and_the_bot_list() -> None:
    results = dashboard.run(bots=3, repeats=1)
    assert results["polling"] == 3
    for figure in ("interactive_ms", "ready_ms", "loaded_ms", "bot_list_ms"):
        assert results[figure]["runs"] == 1
        assert results[figure]["median"] > 0
    assert results["loaded_ms"]["median"] >= results["interactive_ms"]["median"]
    # By the browser's clock: the counts were asked for, answered, then drawn, in that order.
    asked, answered = results["summary_asked_ms"]["median"], results["summaries_ms"]["median"]
    assert 0 < asked < answered <= results["ready_ms"]["median"]
    section = dashboard.markdown(results)
    assert section.startswith("### Dashboard")
    assert "at 3 bots (3 long-polling)" in section
