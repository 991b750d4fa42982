"""The dashboard in real headless Chromium against `slimpipe serve`: submit, watch, sweep, cancel, compare, download.

Tests share one server and run in file order: the form's runs train on the real worker while the
next tests go on, and the compare test uses them.
"""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import httpx
import pytest

STEPS = 30
STATE: dict[str, Any] = {}


def api(server: str, path: str) -> Any:
    response = httpx.get(f"{server}/api/v1{path}", timeout=10)
    response.raise_for_status()
    return response.json()


def wait_runs(server: str, run_ids: list[int], timeout_s: float = 150) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [api(server, f"/runs/{i}") for i in run_ids]
        if all(r["status"] in ("succeeded", "failed", "cancelled") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"runs did not finish: {[(r['id'], r['status']) for r in runs]}")
        time.sleep(0.5)


def ready(page) -> None:
    page.wait_for_function("document.documentElement.dataset.ready === '1'")


def fill_small_run(page, name: str) -> None:
    page.goto("/runs/new")
    ready(page)
    page.fill('[data-path="name"]', name)
    page.select_option('[data-path="model.name"]', "tiny_mlp")
    page.select_option('[data-path="data.name"]', "digits")
    page.fill('[data-path="train.max_steps"]', str(STEPS))
    page.fill('[data-path="train.eval_every"]', "10")


def test_every_page_says_when_the_api_is_unreachable(page, server: str) -> None:
    page.route("**/api/v1/**", lambda route: route.abort())
    for url in ["/", "/runs/1", "/compare?run_ids=1,2", "/experiments/1", "/runs/new?clone=1"]:
        page.goto(url)
        banner = page.locator("#api-banner")
        banner.wait_for(state="visible")
        assert "Cannot reach the slimpipe API" in banner.inner_text()


def test_token_is_asked_once_and_sent_as_bearer(page, server: str) -> None:
    seen: list[str | None] = []

    def guard(route) -> None:
        auth = route.request.headers.get("authorization")
        seen.append(auth)
        if auth != "Bearer s3cret":
            route.fulfill(status=401, json={"detail": "missing or wrong API token"})
        else:
            route.continue_()

    page.route("**/api/v1/**", guard)
    page.goto("/")
    page.locator("#token-dialog").wait_for(state="visible")
    page.fill("#token-input", "s3cret")
    page.click("#token-save")
    ready(page)
    assert page.evaluate("localStorage.getItem('slimpipe.token')") == "s3cret"
    assert seen[-1] == "Bearer s3cret"
    page.reload()
    ready(page)
    assert page.locator("#token-dialog").is_visible() is False


def test_bad_field_shows_the_servers_error_next_to_it(page, server: str, shots) -> None:
    fill_small_run(page, "e2e-bad")
    page.fill('[data-path="compression.default.forward.bits"]', "40")
    error = page.locator('[data-field="compression.default.forward.bits"] .field-error')
    error.wait_for(state="visible")
    assert "16" in error.inner_text()
    assert "compression.default.forward.bits" in page.locator("#form-errors").inner_text()
    page.screenshot(path=shots / "new-run-validation.png", full_page=True)
    # Submitting does not go through while the field is wrong.
    page.click("#submit-button")
    page.wait_for_timeout(500)
    assert page.url.endswith("/runs/new")
    page.fill('[data-path="compression.default.forward.bits"]', "8")
    page.locator("#validate-status", has_text="valid").wait_for()
    assert error.is_hidden()


def test_yaml_view_and_form_stay_in_sync(page, server: str) -> None:
    fill_small_run(page, "e2e-sync")
    page.fill('[data-path="optim.lr"]', "0.125")
    page.wait_for_function("document.getElementById('spec-text').value.includes('lr: 0.125')")
    text = page.locator("#spec-text")
    text.fill(text.input_value().replace("microbatches: 4", "microbatches: 3"))
    page.wait_for_function("document.querySelector('[data-path=\"pipeline.microbatches\"]').value === '3'")


def test_submit_a_sweep_through_the_form(page, server: str, shots) -> None:
    fill_small_run(page, "e2e-sweep")
    page.fill('[data-path="train.max_steps"]', "20")
    page.click("#sweep-add")
    page.fill(".sweep-path", "compression.default.backward.topk")
    page.fill(".sweep-values", "0.5, 0.1")
    page.locator("#sweep-count", has_text="→ 2 runs").wait_for()
    page.locator("#submit-button", has_text="Submit 2 runs").wait_for()
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/experiments/\d+$"))
    experiment_id = int(page.url.rsplit("/", 1)[1])
    ready(page)
    experiment = api(server, f"/experiments/{experiment_id}")
    assert experiment["sweep"] == {"compression.default.backward.topk": [0.5, 0.1]}
    assert len(experiment["run_ids"]) == 2
    rows = page.locator("#sweep-table tbody tr")
    assert rows.count() == 2
    assert sorted(rows.locator("td:first-child").all_inner_texts()) == ["0.1", "0.5"]
    STATE["sweep"] = experiment["run_ids"]
    STATE["experiment"] = experiment_id


def lose_the_first_answer(keys: list, answers: list):
    """A route handler: the first request reaches the service, which stores it, and its answer is lost on
    the way back (`answers` gets what it said); later ones go through. `keys`: each one's Idempotency-Key."""

    def handle(route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) > 1:
            route.continue_()
            return
        answers.append(route.fetch().json())
        route.abort("connectionreset")

    return handle


def test_a_submit_whose_answer_was_lost_queues_its_runs_once_when_submitted_again(page, server: str, shots) -> None:
    """The service queued the run, but its answer never reached the browser. Submitting again sends the same
    `Idempotency-Key`, and the service answers with the run it already queued."""
    fill_small_run(page, "e2e-answer-lost")
    page.fill('[data-path="train.max_steps"]', "2")
    keys, answers = [], []
    page.route("**/api/v1/experiments", lose_the_first_answer(keys, answers))
    page.click("#submit-button")
    banner = page.locator("#api-banner")
    banner.filter(has_text="Submit failed").wait_for()
    assert "runs already queued are not queued twice" in banner.inner_text()
    page.screenshot(path=shots / "new-run-answer-lost.png", full_page=True)
    assert page.url.endswith("/runs/new")

    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    [first] = answers
    assert int(page.url.rsplit("/", 1)[1]) == first["run_ids"][0]  # the run queued the first time
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 32
    named = [r for r in api(server, "/runs?limit=500")["data"] if r["name"] == "e2e-answer-lost"]
    assert [r["id"] for r in named] == first["run_ids"]


def test_a_retry_whose_answer_was_lost_makes_one_run_when_clicked_again(page, server: str) -> None:
    run_id = _queued_run(server, "e2e-retry-lost")  # queued, so cancelling it ends it at once
    assert httpx.post(f"{server}/api/v1/runs/{run_id}/cancel", json={}, timeout=10).json()["status"] == "cancelled"
    page.goto(f"/runs/{run_id}")
    ready(page)
    keys, answers = [], []
    page.route(f"**/api/v1/runs/{run_id}/retry", lose_the_first_answer(keys, answers))
    page.click("#retry-button")
    page.locator("#api-banner", has_text="Retry failed").wait_for()
    page.click("#retry-button")
    page.wait_for_url(lambda url: not url.endswith(f"/runs/{run_id}"))
    assert int(page.url.rsplit("/", 1)[1]) == answers[0]["id"] and keys[0] == keys[1]
    retries = [r["id"] for r in api(server, "/runs?limit=500")["data"] if r["retry_of"] == run_id]
    assert retries == [answers[0]["id"]]


def _queued_run(server: str, name: str, sweep: dict | None = None, tags: tuple = ()) -> int:
    """A run on the gpu queue, which no worker here takes: it stays queued and trains nothing."""
    spec = {"name": name, "model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "train": {"max_steps": 2}}
    body = {"spec": spec, "queue": "gpu", "sweep": sweep, "tags": list(tags)}
    return httpx.post(f"{server}/api/v1/experiments", json=body, timeout=10).json()["run_ids"][0]


def test_tags_and_notes_are_edited_on_the_run_page(page, server: str, shots) -> None:
    run_id = _queued_run(server, "e2e-notes", tags=("draft",))
    page.goto(f"/runs/{run_id}")
    ready(page)
    assert page.input_value("#run-tags") == "draft" and page.is_disabled("#notes-save")
    page.fill("#run-tags", "draft, paper, , paper")
    page.fill("#run-notes", "Accuracy holds at 4 bits;\nthe b1 gradient carries most of the error.")
    page.screenshot(path=shots / "run-notes.png")
    page.click("#notes-save")
    page.locator("#notes-status", has_text="saved").wait_for()
    saved = api(server, f"/runs/{run_id}")
    assert saved["tags"] == ["draft", "paper"]
    assert saved["notes"] == "Accuracy holds at 4 bits;\nthe b1 gradient carries most of the error."
    page.reload()
    ready(page)
    assert page.input_value("#run-tags") == "draft, paper" and page.input_value("#run-notes") == saved["notes"]
    page.goto(f"/compare?run_ids={run_id}")  # the compare table shows them beside the run's name
    ready(page)
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    assert row.locator(".run-notes").inner_text() == saved["notes"].replace("\n", " ")
    assert row.locator(".muted-tag").all_inner_texts() == ["draft", "paper"]
    page.goto(f"/runs/{run_id}")
    ready(page)

    page.fill("#run-tags", "x" * 101)  # a tag is at most 100 characters: the server's reason, nothing saved
    page.click("#notes-save")
    page.locator("#notes-status", has_text="not saved: tags.0").wait_for()
    assert api(server, f"/runs/{run_id}")["tags"] == ["draft", "paper"]

    # Leaving with unsaved edits: the browser asks first.
    with page.expect_event("dialog", timeout=5000) as asked:
        page.close(run_before_unload=True)
    assert asked.value.type == "beforeunload"


def test_selected_runs_are_tagged_and_untagged_from_the_runs_page(page, server: str) -> None:
    first, second = _queued_run(server, "e2e-bulk-tag", tags=("keep",)), _queued_run(server, "e2e-bulk-tag")
    page.goto("/?q=e2e-bulk-tag")
    ready(page)
    for run_id in (first, second):
        page.locator(f'tr[data-run-id="{run_id}"] input.select-run').check()
    assert page.is_disabled("#tag-selected")  # no tag typed yet
    page.fill("#bulk-tag", "study-7")
    page.click("#tag-selected")
    page.locator(f'tr[data-run-id="{second}"] .tag', has_text="study-7").wait_for()
    assert [api(server, f"/runs/{i}")["tags"] for i in (first, second)] == [["keep", "study-7"], ["study-7"]]
    page.click("#untag-selected")
    page.locator(f'tr[data-run-id="{second}"] .tag').wait_for(state="detached")
    assert [api(server, f"/runs/{i}")["tags"] for i in (first, second)] == [["keep"], []]


def test_submitted_text_is_shown_as_text_never_run_as_markup(page, server: str) -> None:
    markup = '<img src="x" onerror="window.__injected = 1">'
    run_id = _queued_run(server, "e2e-markup", sweep={"name": [markup]})
    page.goto(f"/runs/{run_id}")
    ready(page)
    assert f'name="{markup}"' in page.locator("#run-sub").inner_text().replace('\\"', '"')
    page.goto(f"/runs/new?clone={run_id}")
    ready(page)
    page.locator("#clone-note", has_text=markup).wait_for()
    page.goto("/")
    ready(page)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__injected") is None and page.locator("#run-sub img, #clone-note img").count() == 0


def test_submit_a_run_through_the_form_and_watch_it_succeed(page, server: str, shots) -> None:
    fill_small_run(page, "e2e-form")
    page.screenshot(path=shots / "new-run.png", full_page=True)
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    STATE["form"] = run_id
    run = api(server, f"/runs/{run_id}")
    assert run["spec"]["train"]["max_steps"] == STEPS and run["spec"]["model"]["name"] == "tiny_mlp"
    # Live: the badge turns to succeeded without a reload, and the curves are drawn.
    page.locator("#run-status", has_text="succeeded").wait_for(timeout=150_000)
    page.wait_for_function("document.querySelectorAll('#chart-loss .scatterlayer .trace').length > 0")
    page.wait_for_function("document.querySelectorAll('#chart-acc .scatterlayer .trace').length > 0")
    # Every step's training loss arrived (over SSE and the final read) and is on the chart.
    page.wait_for_function(f"document.getElementById('chart-loss').data[0].x.length === {STEPS}")
    assert page.locator("#log-tail").inner_text().strip() != ""
    best = api(server, f"/runs/{run_id}")["summary"]["best_val_acc"]
    page.locator('[data-stat="best_val_acc"] .stat-value', has_text=f"{best:.2f}%").wait_for()
    # The form's first choice is a preset, and the run page diagnoses the compressed run.
    assert run["spec"]["compression"]["preset"] == "balanced"
    assert run["spec"]["compression"]["default"]["forward"]["bits"] == 4
    diagnosis = api(server, f"/runs/{run_id}/diagnose")
    page.locator("#diagnose-cause", has_text=diagnosis["likely_cause"]).wait_for()
    assert page.locator("#diagnose-channels tr").count() == len(diagnosis["channels"]) > 0
    page.wait_for_timeout(600)
    page.screenshot(path=shots / "run-detail.png", full_page=True)


def test_downloads_of_log_and_metrics_csv(page, server: str) -> None:
    run_id = STATE.get("form")
    if run_id is None:
        pytest.skip("needs the run submitted through the form")
    page.goto(f"/runs/{run_id}")
    ready(page)
    with page.expect_download() as log_download:
        page.click("#download-log")
    assert log_download.value.suggested_filename == f"run-{run_id}.log"
    log_text = log_download.value.path().read_text()
    served = httpx.get(f"{server}/api/v1/runs/{run_id}/logs").text
    assert log_text == served and log_text.strip()
    with page.expect_download() as csv_download:
        page.click("#download-csv")
    assert csv_download.value.suggested_filename == f"run-{run_id}-metrics.csv"
    rows = list(csv.DictReader(io.StringIO(csv_download.value.path().read_text())))
    assert list(rows[0]) == ["step", "name", "value", "time"]
    steps = {int(r["step"]) for r in rows if r["name"] == "train/loss"}
    assert max(steps) == STEPS
    assert {"train/loss", "val/acc"} <= {r["name"] for r in rows}


def test_cancel_a_run_from_the_runs_page(page, server: str, shots) -> None:
    body = {
        "spec": {
            "name": "e2e-cancel",
            "model": {"name": "tiny_mlp"},
            "data": {"name": "digits"},
            "train": {"max_steps": 100_000},
        },
        "tags": ["e2e"],
    }
    run_id = httpx.post(f"{server}/api/v1/experiments", json=body, timeout=10).json()["run_ids"][0]
    page.goto("/?tag=e2e")
    ready(page)
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    row.locator('[data-action="cancel"]').click()
    row.locator(".badge.cancelled").wait_for(timeout=60_000)
    assert wait_runs(server, [run_id], 60)[0]["status"] == "cancelled"
    # Retry brings a new queued run with retry_of set; delete removes it again.
    page.locator(f'tr[data-run-id="{run_id}"] [data-action="retry"]').click()
    page.wait_for_function(f"[...document.querySelectorAll('#runs-body tr')].some(r => +r.dataset.runId > {run_id})")
    retry = api(server, "/runs?tag=e2e")["data"][0]
    assert retry["retry_of"] == run_id and retry["attempt"] == 2
    asked: list[str] = []
    page.on("dialog", lambda dialog: asked.append(dialog.message))  # the page fixture accepts it
    page.locator(f'tr[data-run-id="{retry["id"]}"] [data-action="delete"]').click()
    page.locator(f'tr[data-run-id="{retry["id"]}"]').wait_for(state="detached")
    assert asked == [f"Delete run {retry['id']} ({retry['name']})? Its metrics, logs and checkpoints go too."]
    assert httpx.get(f"{server}/api/v1/runs/{retry['id']}").status_code == 404


def test_failed_run_shows_its_error(page, server: str, shots) -> None:
    body = {
        "spec": {
            "name": "e2e-fail",
            "model": {"name": "tiny_mlp"},
            "data": {"name": "digits"},
            # a wrong stage path is refused at submit now; a diverging run fails as it trains
            "optim": {"name": "sgd", "lr": 1e30},
            "train": {"max_steps": 5},
        }
    }
    run_id = httpx.post(f"{server}/api/v1/experiments", json=body, timeout=10).json()["run_ids"][0]
    page.goto(f"/runs/{run_id}")
    page.locator("#error-panel").wait_for(state="visible", timeout=90_000)
    run = api(server, f"/runs/{run_id}")
    assert run["status"] == "failed" and run["error"]
    assert page.locator("#error-message").inner_text() == run["error"]
    assert page.locator("#run-status").inner_text() == "failed"
    page.screenshot(path=shots / "run-failed.png", full_page=True)


def test_compare_three_runs_matches_the_api(page, server: str, shots) -> None:
    if "form" not in STATE or "sweep" not in STATE:
        pytest.skip("needs the runs submitted through the form")
    run_ids = sorted([STATE["form"], *STATE["sweep"]])
    runs = wait_runs(server, run_ids)
    assert [r["status"] for r in runs] == ["succeeded"] * 3, [(r["id"], r["status"], r["error"]) for r in runs]
    page.goto("/")
    ready(page)
    for run_id in run_ids:
        page.locator(f'tr[data-run-id="{run_id}"] input.select-run').check()
    page.click("#compare-selected")
    page.wait_for_url(re.compile(r"/compare\?run_ids="))
    ready(page)
    table = api(server, f"/compare?run_ids={','.join(map(str, run_ids))}")
    assert page.locator("#compare-table tbody tr").count() == 3
    for row in table["runs"]:
        tr = page.locator(f'#compare-table tr[data-run-id="{row["run_id"]}"]')
        assert tr.locator('[data-col="best_val_acc"]').inner_text() == f"{row['best_val_acc']:.2f}%"
        assert tr.locator('[data-col="final_val_acc"]').inner_text() == f"{row['final_val_acc']:.2f}%"
        wire = tr.locator('[data-col="wire_bytes_per_step"]').get_attribute("title")
        assert wire == f"{round(row['wire_bytes_per_step']):,} bytes"
        if row["speedup"] is not None:
            assert tr.locator('[data-col="speedup"]').inner_text() == f"{row['speedup']:.2f}×"
        for field in table["varying_fields"]:
            cell = tr.locator(f'td[data-field="{field}"]').inner_text()
            value = row["differences"].get(field)
            assert cell == ("none" if value is None else str(value))
    assert "compression.default.backward.topk" in table["varying_fields"]
    page.wait_for_function("document.querySelectorAll('#chart-pareto .scatterlayer .trace').length >= 3")
    page.wait_for_function("document.querySelectorAll('#chart-curves .scatterlayer .trace').length === 3")
    page.wait_for_timeout(500)
    page.screenshot(path=shots / "compare.png", full_page=True)
    with page.expect_download() as export:
        page.click("#export-csv")
    exported = list(csv.reader(io.StringIO(export.value.path().read_text())))
    assert len(exported) == 4


def test_sweep_view_and_runs_page_screenshots(page, server: str, shots) -> None:
    if "experiment" not in STATE:
        pytest.skip("needs the sweep submitted through the form")
    wait_runs(server, STATE["sweep"])
    page.goto(f"/experiments/{STATE['experiment']}")
    ready(page)
    table = api(server, f"/compare?run_ids={','.join(map(str, STATE['sweep']))}")
    cells = page.locator('#sweep-table [data-col="best_val_acc"]').all_inner_texts()
    assert sorted(cells) == sorted(f"{r['best_val_acc']:.2f}%" for r in table["runs"])
    page.wait_for_function("document.querySelectorAll('#chart-sweep .scatterlayer .trace').length > 0")
    page.screenshot(path=shots / "experiment.png", full_page=True)
    page.goto("/")
    ready(page)
    page.screenshot(path=shots / "runs.png", full_page=True)
    page.goto(f"/runs/new?clone={STATE['form']}")
    page.wait_for_function("document.getElementById('clone-note').textContent.includes('cloned from')")
    assert page.input_value('[data-path="train.max_steps"]') == str(STEPS)
    print(f"\nscreenshots: {shots}")


def test_pareto_front_keeps_only_undominated_runs(page, server: str) -> None:
    page.goto("/compare")
    front = page.evaluate(
        """async () => {
        const { paretoFront } = await import('/static/charts.js');
        const points = [{x: 100, y: 85, i: 0}, {x: 50, y: 84, i: 1}, {x: 60, y: 80, i: 2},
                        {x: 10, y: 70, i: 3}, {x: 120, y: 85, i: 4}, {x: 30, y: NaN, i: 5}];
        return paretoFront(points).map(p => p.i);
    }"""
    )
    # Fewer bytes and higher accuracy both win: 2 is beaten by 1, 4 by 0, 5 has no accuracy.
    assert front == [3, 1, 0]


def test_a_wrapping_legend_gets_rows_of_its_own_under_the_title(page, server: str) -> None:
    """Per-boundary charts carry 2 entries a boundary: past one row, the legend would cover the title."""
    page.goto("/compare")
    boxes = page.evaluate(
        """async () => {
        await (await import('/static/charts.js')).plotlyReady();
        const { draw, layout, line } = await import('/static/charts.js');
        const div = document.createElement('div');
        div.style.width = '600px'; div.style.height = '320px';
        document.body.append(div);
        const s = { step: [1, 7], value: [0.1, 0.2] };
        const traces = [...Array(8).keys()].map(i => line(`error b${i >> 1} ${i % 2 ? 'bwd' : 'fwd'}`, s, {}));
        draw(div, traces, layout('Reconstruction error (relative)'));
        const box = (sel) => div.querySelector(sel).getBoundingClientRect();
        return { title: box('.gtitle'), legend: box('.legend'), plot: box('.nsewdrag') };
    }"""
    )
    title, legend, plot = boxes["title"], boxes["legend"], boxes["plot"]
    assert title["bottom"] <= legend["top"] + 1  # below the title, not across it
    assert legend["bottom"] <= plot["top"] + 1  # and above the plot
    assert legend["height"] > 30  # it did wrap: two rows


def test_a_warm_up_step_goes_off_the_time_chart_with_a_note(page, server: str) -> None:
    """Step 1 at 10x a steady step squashed the time chart flat; it goes off the top, and the note names it."""
    page.goto("/compare")
    got = page.evaluate(
        """async () => {
        const { clipSpikes, layout, line, median } = await import('/static/charts.js');
        const time = { step: [1, 2, 3, 4, 5], value: [5.75, 0.57, 0.61, 0.55, 0.68] };
        const link = { step: [1, 2, 3, 4, 5], value: [0.21, 0.21, 0.21, 0.21, 0.21] };
        const lay = layout('Time per batch');
        clipSpikes([line('time', time), line('link', link)], lay);
        const two = layout('Time per batch');
        clipSpikes([line('time', { step: [1, 2, 3, 4, 5], value: [5.75, 0.57, 9.1, 0.55, 0.68] })], two);
        const steady = layout('Time per batch');
        clipSpikes([line('time', { step: [1, 2, 3], value: [0.6, 0.5, 0.7] })], steady);
        return { range: lay.yaxis.range, note: lay.annotations.map(a => a.text), two: two.annotations[0].text,
                 steady: [steady.yaxis.range, steady.annotations], medians: [median([3, 1, 2]), median([4, null, 1, 2, 3]), median([])] };
    }"""
    )
    assert got["range"] == pytest.approx([0, 0.68 * 1.15])
    assert got["note"] == ["step 1: 5.75 s, off the chart"]
    assert got["two"] == "2 points off the chart, up to 9.10 s (step 3)"
    assert got["steady"] == [None, None]  # nothing to clip: Plotly's own range
    assert got["medians"] == [2, 2.5, None]


def test_eta_is_the_engines_estimate_or_none(page, server: str) -> None:
    """No rate since the start (it counts the start-up and every evaluation): the engine's figure or nothing."""
    page.goto("/compare")
    got = page.evaluate(
        """async () => {
        const { progress, progressBar } = await import('/static/format.js');
        const started_at = new Date(Date.now() - 600e3).toISOString();  // 10 min ago, 1 of 100 steps done
        const running = { status: 'running', progress_step: 1, progress_total: 100, started_at };
        return [progress({ ...running, summary: { eta_s: 99.5, eta_at: 1 } }).eta,
                progress({ ...running, summary: {} }).eta,
                progress({ ...running, status: 'succeeded', summary: { eta_s: 3 } }).eta,
                progressBar({ ...running, summary: { eta_s: 99.5 } }).textContent];
    }"""
    )
    assert got[:3] == [99.5, None, None]
    assert got[3] == "1 / 100 · ETA 1m 40s"  # the old rate would have said 16h 30m


def test_checkpoint_download_from_the_run_page(page, server: str) -> None:
    import tarfile

    import torch

    body = {
        "spec": {
            "name": "e2e-checkpoint",
            "model": {"name": "tiny_mlp"},
            "data": {"name": "digits"},
            "train": {"max_steps": 10, "checkpoint_every": 5},
        },
        "tags": ["e2e"],
    }
    run_id = httpx.post(f"{server}/api/v1/experiments", json=body, timeout=10).json()["run_ids"][0]
    assert wait_runs(server, [run_id], 120)[0]["status"] == "succeeded"
    page.goto(f"/runs/{run_id}")
    ready(page)
    with page.expect_download() as download:
        page.click("#download-checkpoint")
    assert download.value.suggested_filename == f"run-{run_id}-checkpoint.tar"
    with tarfile.open(download.value.path()) as tar:
        assert tar.getnames() == ["checkpoint.pt"]
        state = torch.load(io.BytesIO(tar.extractfile("checkpoint.pt").read()), weights_only=True)
    assert state["step"] == 10 and "fc1.weight" in state["model"]
    # A run whose spec saves no checkpoint has no button.
    body["spec"]["train"] = {"max_steps": 2}
    plain = httpx.post(f"{server}/api/v1/experiments", json=body, timeout=10).json()["run_ids"][0]
    page.goto(f"/runs/{plain}")
    ready(page)
    assert page.locator("#download-checkpoint").is_hidden() and page.locator("#download-spec").is_visible()
    wait_runs(server, [plain], 120)
