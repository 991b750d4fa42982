"""Studies in Chromium on a seeded database (API and pages, no worker): seeds grouped, many axes, search, docs offline.

The runs are written through the backend's crud with known figures, so each test checks the page against
the API's numbers without waiting for training.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from benchmarks.dashboard import serve_api

TOPK = "compression.default.backward.topk"
BITS = "compression.default.forward.bits"
PRESET = "compression.preset"
PRESETS = ["balanced", "aggressive", "extreme"]
STEPS = (10, 20, 30)
BASE_SPEC: dict[str, Any] = {
    "model": {"name": "tiny_mlp"},
    "data": {"name": "digits"},
    "train": {"max_steps": 30, "eval_every": 10},
}


def _accuracy(values: dict[str, Any], step: int) -> float:
    """A distinct, known val acc per run and step: top-k and seed both move it."""
    topk = values.get(TOPK) or 1.0
    return 60 + 30 * topk + 1.5 * values.get("train.seed", 0) + step / 10 + (values.get("optim.lr", 0) or 0) * 10


def _seed_experiment(database_url: str, name: str, sweep: dict[str, list[Any]], tags: list[str]) -> list[int]:
    from backend import crud, db
    from slimpipe import names
    from slimpipe.spec import dump_spec, expand_sweep

    points = [(values, dump_spec(spec)) for values, spec in expand_sweep({**BASE_SPEC, "name": name}, sweep)]
    with db.session_scope(database_url) as session:
        _, runs = crud.create_experiment(
            session=session, name=name, spec={**BASE_SPEC, "name": name}, sweep=sweep, tags=tags,
            runs_to_create=points, queue=names.QUEUE_CPU,
        )  # fmt: skip
        ids = [r.id for r in runs]
    for run_id, (values, _) in zip(ids, points, strict=True):
        accs = [_accuracy(values, s) for s in STEPS]
        wire = 1000.0 * (values.get(TOPK) or 1.0)
        with db.session_scope(database_url) as session:
            crud.claim_run(run_id, "seeded", None, session=session)
            crud.insert_metrics(
                session=session, run_id=run_id, points=[(s, "val/acc", a) for s, a in zip(STEPS, accs, strict=True)]
            )
            summary = {"best_val_acc": max(accs), "final_val_acc": accs[-1], "wire_bytes_per_step": wire}
            crud.finish_run(run_id, names.SUCCEEDED, summary=summary, session=session)
    return ids


def _seed_failed(database_url: str) -> int:
    """A run that failed before its first step: no metrics, no summary."""
    from backend import crud, db
    from slimpipe import names
    from slimpipe.spec import dump_spec, parse_spec

    spec = dump_spec(parse_spec({**BASE_SPEC, "name": "broken"}))
    with db.session_scope(database_url) as session:
        _, (run,) = crud.create_experiment(
            session=session, name="broken", spec=spec, sweep=None, tags=[], runs_to_create=[({}, spec)],
            queue=names.QUEUE_CPU,
        )  # fmt: skip
        run_id = run.id
    with db.session_scope(database_url) as session:
        crud.claim_run(run_id, "seeded", None, session=session)
        crud.finish_run(run_id, names.FAILED, error="the model has no module 'layer9'", session=session)
    return run_id


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from backend import db

    workdir = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{workdir / 'study.db'}"
    db.migrate(url)
    seeds = _seed_experiment(url, "seed-topk", {"train.seed": [0, 1], TOPK: [0.1, 0.5]}, ["Paper-2x2"])
    three = _seed_experiment(url, "three-axes", {BITS: [None, 8], TOPK: [0.1, 0.5], "optim.lr": [0.1, 0.2]}, ["grid"])
    presets = _seed_experiment(url, "presets", {PRESET: PRESETS}, ["presets"])
    failed = _seed_failed(url)
    with serve_api(url, workdir) as base:
        yield {"base": base, "seeds": seeds, "three": three, "presets": presets, "failed": failed, "database_url": url}


@pytest.fixture
def tab(browser, study: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(base_url=study["base"], viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(60_000)  # a cold plotly.js compile on a busy 2-core machine takes seconds
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def get(study: dict[str, Any], path: str, **params: Any) -> Any:
    response = httpx.get(f"{study['base']}/api/v1{path}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def experiment_id(study: dict[str, Any], key: str) -> int:
    return get(study, f"/runs/{study[key][0]}")["experiment_id"]


def chart(page: Any, div: str) -> list[dict[str, Any]]:
    return page.evaluate(f"JSON.parse(JSON.stringify(document.getElementById('{div}').data || []))")


def test_seed_by_topk_sweep_draws_one_line_per_topk_with_the_seeds_grouped(tab, study, shots) -> None:
    tab.goto(f"/experiments/{experiment_id(study, 'seeds')}")
    tab.wait_for_function("window.__slimpipeCurvesReady !== undefined")
    runs = {r["run_id"]: r for r in get(study, "/compare", run_ids=",".join(map(str, study["seeds"])))["runs"]}
    by_topk: dict[float, list[int]] = {}
    for run_id in study["seeds"]:
        by_topk.setdefault(get(study, f"/runs/{run_id}")["sweep_values"][TOPK], []).append(run_id)
    assert sorted(by_topk) == [0.1, 0.5] and all(len(ids) == 2 for ids in by_topk.values())

    # The table: one row per top-k, the two seeds folded into mean ± sample std of the API's figures.
    rows = tab.locator("#sweep-table tbody tr")
    assert rows.count() == 2
    for topk, ids in by_topk.items():
        row = tab.locator(f'#sweep-table tr:has(td[data-axis="{TOPK}"]:text-is("{topk}"))')
        assert sorted(map(int, row.get_attribute("data-run-ids").split(","))) == sorted(ids)
        best = [runs[i]["best_val_acc"] for i in ids]
        expected = f"{statistics.mean(best):.2f}% ± {statistics.stdev(best):.2f}"
        assert row.locator('[data-col="best_val_acc"]').inner_text() == expected

    # The sweep chart: top-k on x, one point per top-k at the seeds' mean with their std as error bar.
    (sweep,) = chart(tab, "chart-sweep")
    assert sweep["x"] == [0.1, 0.5]
    for x, y, err in zip(sweep["x"], sweep["y"], sweep["error_y"]["array"], strict=True):
        best = [runs[i]["best_val_acc"] for i in by_topk[x]]
        assert math.isclose(y, statistics.mean(best)) and math.isclose(err, statistics.stdev(best))

    # The curves: one line per top-k, each the mean of its two seeds' val/acc at every step.
    lines = [t for t in chart(tab, "chart-sweep-curves") if t.get("meta")]
    assert sorted(t["name"] for t in lines) == ["backward.topk=0.1 (mean of 2)", "backward.topk=0.5 (mean of 2)"]
    for trace in lines:
        ids = trace["meta"]["runs"]
        series = [get(study, f"/runs/{i}/metrics", names="val/acc")["series"]["val/acc"] for i in ids]
        assert trace["x"] == list(STEPS)
        for j, y in enumerate(trace["y"]):
            assert math.isclose(y, statistics.mean(s["value"][j] for s in series))
    assert len(chart(tab, "chart-sweep-curves")) == 4  # each mean line has its ±std band
    tab.screenshot(path=shots / "study-seeds.png", full_page=True)


def test_three_axes_get_categories_lines_facets_and_parallel_coordinates(tab, study, shots) -> None:
    tab.goto(f"/experiments/{experiment_id(study, 'three')}")
    tab.wait_for_function("window.__slimpipeCurvesReady !== undefined")
    first = chart(tab, "chart-sweep")
    # bits (with none = dense) on x as categories, one line per top-k, one facet per learning rate.
    assert [t["name"] for t in first] == ["backward.topk=0.1", "backward.topk=0.5"]
    assert all(t["x"] == ["none", "8"] for t in first)
    assert tab.evaluate("document.getElementById('chart-sweep').layout.xaxis.type") == "category"
    assert tab.locator("[data-facet]").count() == 1
    titles = tab.locator("#sweep-charts .gtitle").evaluate_all("ns => ns.map(n => n.textContent)")
    assert any("lr=0.1" in t for t in titles) and any("lr=0.2" in t for t in titles)
    assert tab.locator("#chart-parcoords .parcoords").count() == 1
    assert tab.locator("#sweep-table tbody tr").count() == 8
    tab.screenshot(path=shots / "study-three-axes.png", full_page=True)


def test_runs_page_searches_and_sorts(tab, study, shots) -> None:
    tab.goto("/")
    tab.wait_for_function("document.documentElement.dataset.ready === '1'")
    tab.fill("#filter-q", "seed-TOPK")
    tab.wait_for_function("document.querySelectorAll('#runs-body tr[data-run-id]').length === 4")
    shown = [
        int(x) for x in tab.locator("#runs-body tr[data-run-id]").evaluate_all("rs => rs.map(r => r.dataset.runId)")
    ]
    assert shown == sorted(study["seeds"], reverse=True)
    assert "q=seed-TOPK" in tab.url
    # Sorting by best val acc: the first click puts the highest first, as the API orders it.
    tab.click('th[data-sort="best_val_acc"]')
    expected = [r["id"] for r in get(study, "/runs", q="seed-topk", sort="-best_val_acc")["data"]]
    tab.wait_for_function(
        "ids => [...document.querySelectorAll('#runs-body tr[data-run-id]')].map(r => +r.dataset.runId).join() === ids",
        arg=",".join(map(str, expected)),
    )
    accs = tab.locator('#runs-body [data-col="best_val_acc"]').all_inner_texts()
    assert accs == sorted(accs, key=lambda a: float(a.rstrip("%")), reverse=True)
    assert tab.locator('th[data-sort="best_val_acc"]').get_attribute("aria-sort") == "descending"
    tab.click('th[data-sort="best_val_acc"]')
    tab.wait_for_function(
        "ids => [...document.querySelectorAll('#runs-body tr[data-run-id]')].map(r => +r.dataset.runId).join() === ids",
        arg=",".join(map(str, reversed(expected))),
    )
    # The tag filter takes part of a tag; the compression columns say what each direction sends.
    tab.fill("#filter-q", "")
    tab.fill("#filter-tag", "paper-2")
    tab.wait_for_function("document.querySelectorAll('#runs-body tr[data-run-id]').length === 4")
    backward = tab.locator('#runs-body [data-col="backward"]').all_inner_texts()
    assert sorted(set(backward)) == ["top-k 10%", "top-k 50%"]
    assert set(tab.locator('#runs-body [data-col="forward"]').all_inner_texts()) == {"dense"}
    tab.screenshot(path=shots / "runs-search.png", full_page=True)


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".swagger-ui .opblock"), ("/redoc", "[data-section-id]")])
def test_api_docs_render_offline_with_no_request_to_other_hosts(tab, study, path: str, rendered: str) -> None:
    requests: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.goto(path)
    tab.wait_for_selector(rendered)
    assert tab.locator(rendered).count() > 3
    # Same-origin blob: URLs (ReDoc's search worker) and data: URLs stay in the page.
    hosts = {urlsplit(u.removeprefix("blob:")).netloc for u in requests if not u.startswith("data:")}
    assert len(requests) >= 3 and hosts == {urlsplit(study["base"]).netloc}, requests


def test_compare_puts_outcomes_first_shows_run_ids_and_keeps_pareto_labels_inside(tab, study, shots) -> None:
    run_ids = study["three"]
    tab.goto(f"/compare?run_ids={','.join(map(str, run_ids))}")
    tab.wait_for_function("window.__slimpipeCurvesReady !== undefined")
    heads = tab.locator("#compare-table thead th").all_inner_texts()
    table = get(study, "/compare", run_ids=",".join(map(str, run_ids)))
    outcomes = ["BEST VAL ACC", "FINAL VAL ACC", "Δ VS BASELINE", "WIRE/STEP", "RATIO", "TIME/BATCH", "SPEED-UP"]
    assert [h.upper() for h in heads[2:9]] == outcomes
    assert [tab.locator("#compare-table thead th").nth(9 + i).get_attribute("title") for i in range(3)] == table[
        "varying_fields"
    ]
    for row in table["runs"]:
        tr = tab.locator(f'#compare-table tr[data-run-id="{row["run_id"]}"]')
        assert tr.locator(".run-id").inner_text() == f"#{row['run_id']}"
        cell = tr.locator(f'td[data-field="{TOPK}"]')
        assert cell.get_attribute("title") == f"{TOPK} = {row['differences'][TOPK]}"
    # Every Pareto label lies inside the chart's drawing area.
    boxes = tab.evaluate(
        """() => {
        const plot = document.querySelector('#chart-pareto .nsewdrag').getBoundingClientRect();
        return [...document.querySelectorAll('#chart-pareto .textpoint text')].map(t => {
            const b = t.getBoundingClientRect();
            return [b.left - plot.left, plot.right - b.right, b.top - plot.top, plot.bottom - b.bottom];
        });
    }"""
    )
    assert len(boxes) == len(run_ids) == 8 and all(min(gaps) >= 0 for gaps in boxes), boxes  # a few: all labelled
    tab.screenshot(path=shots / "compare-three-axes.png", full_page=True)

    # Past 8 runs only the Pareto front is labelled (fewer bytes and a higher accuracy win); the rest on hover.
    many = run_ids + study["seeds"]
    table = get(study, "/compare", run_ids=",".join(map(str, many)))
    front, best = 0, -math.inf
    for row in sorted(table["runs"], key=lambda r: (r["wire_bytes_per_step"], -r["best_val_acc"])):
        if row["best_val_acc"] > best:
            front, best = front + 1, row["best_val_acc"]
    tab.goto(f"/compare?run_ids={','.join(map(str, many))}")
    tab.wait_for_function("window.__slimpipeCurvesReady !== undefined")
    labels = tab.locator("#chart-pareto .textpoint text")
    assert len(many) == 12 and 0 < labels.count() == front < 12


def test_form_text_merges_over_defaults_shows_api_messages_and_blocks_bad_text(tab, study) -> None:
    tab.goto("/runs/new")
    tab.wait_for_function("document.documentElement.dataset.ready === '1'")
    defaults = {
        p: tab.input_value(f'[data-path="{p}"]') for p in ("data.batch_size", "optim.lr", "link.bandwidth_mbps")
    }
    assert all(defaults.values())
    tab.fill("#spec-text", "model:\n  name: tiny_mlp\ndata:\n  name: digits\ntrain:\n  max_steps: 7\n")
    tab.wait_for_function("document.getElementById('text-status').textContent.startsWith('form updated')")
    assert tab.input_value('[data-path="train.max_steps"]') == "7"
    assert {p: tab.input_value(f'[data-path="{p}"]') for p in defaults} == defaults  # left out: still the default
    tab.wait_for_function("document.getElementById('validate-status').textContent.startsWith('✓ valid')")

    # Invalid text: Submit is disabled and the earlier "✓ valid" is gone.
    tab.fill("#spec-text", "model: [unclosed\n")
    tab.wait_for_function("document.getElementById('text-status').textContent.startsWith('not parsed')")
    assert tab.is_disabled("#submit-button")
    assert "✓" not in tab.inner_text("#validate-status")

    # An unknown model keeps its name in the form, and the API's own message is shown.
    spec = {"model": {"name": "resnet9000"}, "data": {"name": "digits"}}
    answer = httpx.post(f"{study['base']}/api/v1/specs/validate", json={"spec": spec}, timeout=10).json()
    message = next(e["message"] for e in answer["detail"] if e["field"].startswith("model"))
    tab.fill("#spec-text", "model:\n  name: resnet9000\ndata:\n  name: digits\n")
    tab.wait_for_function("document.getElementById('form-errors').textContent.length > 0")
    assert message in tab.inner_text("#form-errors")
    assert "is required" not in tab.inner_text("#form-errors")
    assert tab.input_value('[data-path="model.name"]') == "resnet9000"
    assert not tab.is_disabled("#submit-button")


def test_clone_keeps_the_runs_tags(tab, study) -> None:
    run = get(study, f"/runs/{study['seeds'][0]}")
    assert run["tags"] == ["Paper-2x2"]
    tab.goto(f"/runs/new?clone={run['id']}")
    tab.wait_for_function("document.getElementById('clone-note').textContent.includes('cloned from')")
    assert tab.input_value('[data-path="tags"]') == "Paper-2x2"


def test_failed_run_page_has_no_live_badges_or_empty_charts(tab, study, shots) -> None:
    tab.goto(f"/runs/{study['failed']}")
    tab.wait_for_function("window.__slimpipeReady !== undefined")
    assert tab.locator("#error-message").inner_text() == "the model has no module 'layer9'"
    assert tab.locator(".live").count() == 0
    assert tab.locator("#charts").is_hidden() and tab.locator("#summary-cards").is_hidden()
    assert tab.inner_text("#no-metrics") == "No metrics were recorded: the run failed before its first step."
    tab.screenshot(path=shots / "run-failed.png", full_page=True)


def test_run_summary_values_carry_units(tab, study) -> None:
    run_id = study["seeds"][0]
    summary = get(study, f"/runs/{run_id}")["summary"]
    tab.goto(f"/runs/{run_id}")
    tab.wait_for_function("window.__slimpipeReady !== undefined")
    cells = dict(
        zip(
            tab.locator("#summary-table th").all_inner_texts(),
            tab.locator("#summary-table td").all_inner_texts(),
            strict=True,
        )
    )
    assert cells["wire_bytes_per_step"] == f"{summary['wire_bytes_per_step']:.0f} B"
    assert cells["best_val_acc"] == f"{summary['best_val_acc']:.2f}%"
    assert tab.locator(".live").count() == 0


def test_compare_groups_runs_that_differ_only_in_their_seed(tab, study) -> None:
    tab.goto(f"/compare?run_ids={','.join(map(str, study['seeds']))}")
    tab.wait_for_function("window.__slimpipeCurvesReady !== undefined")
    lines = [t for t in chart(tab, "chart-curves") if t.get("meta")]
    assert sorted(t["name"] for t in lines) == ["backward.topk=0.1 (mean of 2)", "backward.topk=0.5 (mean of 2)"]
    for trace in lines:
        series = [get(study, f"/runs/{i}/metrics", names="val/acc")["series"]["val/acc"] for i in trace["meta"]["runs"]]
        assert trace["y"] == pytest.approx(
            [statistics.mean(v) for v in zip(*(s["value"] for s in series), strict=True)]
        )
    assert tab.locator("#compare-table tbody tr").count() == 4  # the table keeps one row per run


def test_a_preset_sweep_keeps_its_order_and_compares_by_the_preset_alone(tab, study) -> None:
    """balanced, aggressive, extreme as swept (not a-z); compare names the preset, not the fields it sets."""
    tab.goto(f"/experiments/{experiment_id(study, 'presets')}")
    tab.wait_for_function("window.__slimpipeCurvesReady !== undefined")
    assert tab.locator(f'#sweep-table td[data-axis="{PRESET}"]').all_inner_texts() == PRESETS
    assert chart(tab, "chart-sweep")[0]["x"] == PRESETS
    # a series of one point (a run evaluated once) is drawn with its marker; a line alone shows nothing
    modes = tab.evaluate("""async () => { const { line } = await import("/static/charts.js");
        return [line("one", { step: [30], value: [60] }).mode, line("three", { step: [10, 20, 30], value: [1, 2, 3] }).mode]; }""")
    assert modes == ["lines+markers", "lines"]

    tab.goto(f"/compare?run_ids={','.join(map(str, study['presets']))}")
    tab.wait_for_function("window.__slimpipeCurvesReady !== undefined")
    assert [h.lower() for h in tab.locator("#compare-table thead th.diff").all_inner_texts()] == ["preset"]
    aggressive = tab.locator(f'#compare-table tr[data-run-id="{study["presets"][1]}"] td[data-field="{PRESET}"]')
    title = aggressive.get_attribute("title")
    assert title.startswith(f"{PRESET} = aggressive, which sets ") and "backward.bits=3" in title, title
    points = [t["name"] for t in chart(tab, "chart-pareto") if t["mode"] != "lines"]
    assert sorted(points) == sorted(PRESETS)
    assert sorted(tab.locator("#chart-pareto .textpoint text").all_text_contents()) == sorted(PRESETS)


def test_a_live_run_page_opens_its_event_stream_again_after_an_error_status(tab, study) -> None:
    """A browser's EventSource gives up for good on an error status (a 503 while the database restarts); the
    run page opens the stream again from its last event id and follows the run to its end."""
    from backend import crud, db
    from slimpipe.spec import dump_spec, parse_spec

    spec = dump_spec(parse_spec({**BASE_SPEC, "name": "live"}))
    with db.session_scope(study["database_url"]) as session:
        _, (run,) = crud.create_experiment(session=session, name="live", spec=spec, sweep=None, tags=[],
                                           runs_to_create=[({}, spec)], queue="cpu")
        run_id = run.id
    with db.session_scope(study["database_url"]) as session:
        crud.claim_run(run_id, "seeded", None, session=session)
    row = get(study, f"/runs/{run_id}")
    requests: list[str] = []

    def serve(route: Any) -> None:
        requests.append(route.request.url)
        if len(requests) == 1:  # a stream that ends after one event, whose id the page keeps
            body = f"event: status\ndata: {json.dumps(row)}\nid: 7:9\n\n"
            route.fulfill(status=200, body=body, headers={"Content-Type": "text/event-stream"})
        elif len(requests) == 2:  # the browser's own reconnect meets the database restarting
            route.fulfill(status=503, body='{"detail": "the database is unreachable"}', content_type="application/json")
        else:
            route.continue_()

    tab.route("**/api/v1/runs/*/events*", serve)
    tab.goto(f"/runs/{run_id}")
    tab.wait_for_function("document.getElementById('run-status').textContent === 'running'")
    deadline = time.monotonic() + 30
    while len(requests) < 3 and time.monotonic() < deadline:
        tab.wait_for_timeout(200)
    assert len(requests) >= 3 and "cursor=7%3A9" in requests[2] and "cursor" not in requests[0], requests
    with db.session_scope(study["database_url"]) as session:
        crud.finish_run(run_id, "succeeded", summary={"best_val_acc": 50.0}, session=session)
    tab.wait_for_function("document.getElementById('run-status').textContent === 'succeeded'", timeout=30_000)


def test_a_page_that_meets_a_503_says_why_and_loads_once_the_service_answers(tab, study) -> None:
    run_id = study["seeds"][0]
    detail = "the database is unreachable right now (restarting?); try again in a few seconds"
    answered: list[int] = []

    def serve(route: Any) -> None:
        answered.append(503 if not answered else 200)
        if answered[-1] == 503:
            route.fulfill(status=503, body=json.dumps({"detail": detail}), content_type="application/json",
                          headers={"Retry-After": "5"})
        else:
            route.continue_()

    tab.route(f"**/api/v1/runs/{run_id}", serve)
    tab.goto(f"/runs/{run_id}")
    banner = tab.locator("#api-banner")  # its text stays after the next answer hides it
    said = f"The slimpipe API answered HTTP 503: {detail}. The page retries on its own."
    tab.wait_for_function(f"document.getElementById('api-banner').textContent === {json.dumps(said)}")
    name = get(study, f"/runs/{run_id}")["name"]
    tab.wait_for_function(f"document.getElementById('run-name').textContent === {json.dumps(name)}")  # loaded again
    assert answered[:2] == [503, 200] and banner.is_hidden()

    # The runs list keeps the rows it last had while the service answers 503, and goes on once it answers.
    tab.goto("/")
    rows = "document.querySelectorAll('#runs-body tr[data-run-id]').length"
    tab.wait_for_function(f"{rows} > 0")
    shown = tab.evaluate(rows)
    refused: list[str] = []

    def refuse(route: Any) -> None:
        refused.append(route.request.url)
        route.fulfill(status=503, body=json.dumps({"detail": detail}), content_type="application/json")

    tab.route("**/api/v1/runs?*", refuse)
    tab.wait_for_function(f"document.getElementById('api-banner').textContent === {json.dumps(said)}")
    while len(refused) < 2:  # refreshed every 2 s: a second refusal
        tab.wait_for_timeout(250)
    assert tab.evaluate(rows) == shown and banner.is_visible()
    tab.unroute("**/api/v1/runs?*")
    banner.wait_for(state="hidden")
    assert tab.evaluate(rows) == shown

