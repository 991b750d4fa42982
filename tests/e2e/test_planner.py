"""The what-if link planner on the run and compare pages shows what GET /runs/{id}/whatif computes."""

from __future__ import annotations

import httpx

from tests.e2e.test_dashboard import api, wait_runs

SPEC = {
    "name": "planner",
    "model": {"name": "tiny_mlp"},
    "data": {"name": "digits", "batch_size": 32},
    "pipeline": {"microbatches": 2},
    "train": {"max_steps": 8, "eval_every": 8, "threads": 1},
}


def test_planner_presets_and_typed_links_replay_the_stored_run(page, server: str) -> None:
    created = httpx.post(f"{server}/api/v1/experiments", json={"spec": SPEC}, timeout=10)
    (run_id,) = created.json()["run_ids"]
    (run,) = wait_runs(server, [run_id])
    assert run["status"] == "succeeded", run["error"]

    page.goto(f"/runs/{run_id}")
    page.wait_for_function("document.getElementById('planner').dataset.ready === '100/1'")
    page.click('#planner-presets [data-mbps="10"]')
    page.wait_for_function("document.getElementById('planner').dataset.ready === '10/1'")
    plan = api(server, f"/runs/{run_id}/whatif?bandwidth_mbps=10&latency_ms=1")
    row = page.locator(f'#planner-table tr[data-run-id="{run_id}"]')
    assert row.locator('[data-col="speedup"]').inner_text() == f"{plan['speedup_vs_one_device']:.2f}×"

    page.goto(f"/compare?run_ids={run_id}")
    page.wait_for_function("document.getElementById('planner').dataset.ready === '100/1'")
    page.fill("#planner-bandwidth", "2.5")
    page.fill("#planner-latency", "4")
    page.click("#planner-form button[type=submit]")
    page.wait_for_function("document.getElementById('planner').dataset.ready === '2.5/4'")
    plan = api(server, f"/runs/{run_id}/whatif?bandwidth_mbps=2.5&latency_ms=4")
    row = page.locator(f'#planner-table tr[data-run-id="{run_id}"]')
    assert row.locator('[data-col="speedup"]').inner_text() == f"{plan['speedup_vs_one_device']:.2f}×"
    assert "Speed-up vs one device" in page.locator("#planner").inner_text()
