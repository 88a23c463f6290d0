"""The monitor at 1,000 branches, measured in the page with performance.now(): the execution page renders every
cell in under a second, and a burst of 1,000 branch_completed events is applied in under a second without a long
frame. The burst is a rollout stopping at its first error (max_errors 0, one branch at a time): the first branch
fails and the 999 queued ones end `skipped` in the same commit. The figures are printed (run with -s) and quoted
in the README."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import ADMIN
from tests.browser.page import cells, dataset, element, go, sign_in, wait

BRANCHES = 1000


@pytest.fixture(scope="module")
def fleet(monitor) -> list[int]:
    """1,000 local targets tagged `fleet` (admin's raised rate limit; four clients at once)."""
    headers = {"Authorization": f"Bearer {monitor.admin.token}"}

    def create(chunk: range) -> list[int]:
        ids = []
        with httpx.Client(base_url=monitor.base_url, headers=headers, timeout=30) as client:
            for i in chunk:
                response = client.post("/api/targets", json={"name": f"fleet-{i:04d}", "connection": "local",
                                                            "tags": ["fleet"]})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
        return ids

    with ThreadPoolExecutor(4) as pool:
        return [i for ids in pool.map(create, [range(k, BRANCHES, 4) for k in range(4)]) for i in ids]


@pytest.fixture
def release() -> Path:
    """A file whose creation lets the first branch go on (and fail); removed afterwards."""
    path = Path(f"/tmp/opsc-browser-release-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


def test_a_1000_branch_execution_renders_and_a_burst_of_1000_completions_applies_within_a_second(
        monitor, browser, fleet, release, screenshots):
    command = f'while [ ! -e {release} ]; do sleep 0.05; done; echo "stopping the rollout here" >&2; exit 1'
    job = monitor.admin.post("/api/jobs", {
        "name": "Fleet rollout", "job_type": "command", "target_selector": {"tags_any": ["fleet"]},
        "actions": [{"action_type": "command", "action_name": "upgrade", "action_parameters": {"command": command}}]})
    execution = monitor.admin.post(f"/api/jobs/{job['job_serial']}/execute",
                                   {"max_concurrency": "1", "max_errors": "0"})
    serial = execution["execution_serial"]
    assert len(execution["branches"]) == BRANCHES

    sign_in(browser, monitor.base_url, *ADMIN)
    wait(browser, lambda d: d.find_element(By.ID, "live-state").text == "● live", "the dashboard's live stream")
    wait(browser, lambda d: f"0/{BRANCHES}" in d.find_element(By.ID, "running-now").text, "the rollout running")
    browser.save_screenshot(str(screenshots / "dashboard.png"))

    go(browser, f"#/executions/{serial}")
    page = element(browser, f"#execution[data-serial='{serial}'][data-render-ms]")
    rendered = dataset(browser, "#execution")
    assert int(rendered["branches"]) == BRANCHES and len(cells(browser)) == BRANCHES
    wait(browser, lambda d: cells(d).count("running") == 1, "the first branch running")
    wait(browser, lambda d: d.find_element(By.ID, "live-state").text == "● live", "the execution's live stream")
    render_ms, fetch_ms, build_ms = (float(rendered[k]) for k in ("renderMs", "fetchMs", "buildMs"))
    print(f"\n1,000-branch execution page: rendered {render_ms:.0f} ms after it opened (the 1,000-branch snapshot "
          f"fetched at {fetch_ms:.0f} ms, its cells built in {build_ms:.1f} ms)")
    browser.save_screenshot(str(screenshots / "execution-1000.png"))

    release.touch()
    wait(browser, lambda d: page.get_attribute("data-finished") == str(BRANCHES), "all 1,000 cells finished",
         timeout=30)
    burst = dataset(browser, "#execution")
    shown = cells(browser)
    assert shown.count("skipped") == BRANCHES - 1 and shown.count("failed") == 1, set(shown)
    applied = int(burst["completedApplied"])
    burst_ms, arrival_ms, lag_ms, frame_ms = (float(burst[k]) for k in ("burstMs", "arrivalMs", "maxLagMs",
                                                                          "maxFrameMs"))
    print(f"burst of {applied} branch_completed events (arriving over {arrival_ms:.0f} ms): all applied "
          f"{burst_ms:.0f} ms after the first arrived; an event waited at most {lag_ms:.0f} ms for its frame; "
          f"the longest frame's update took {frame_ms:.1f} ms")
    assert applied == BRANCHES
    assert render_ms < 1000, f"1,000 cells took {render_ms:.0f} ms to render"
    assert burst_ms < 1000, f"1,000 completions took {burst_ms:.0f} ms to apply"
    assert frame_ms < 100, f"a frame's update took {frame_ms:.0f} ms: the page froze"
    wait(browser, lambda d: page.get_attribute("data-status") == "failed", "the execution failed")
    assert "Rollout stopped" in element(browser, "#stop-reason").text
