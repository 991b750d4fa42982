"""GET /runs/{id}/whatif: a stored run replayed over another link equals `makespan` of the same inputs."""

import pytest

from backend import crud, db
from slimpipe import names
from worker.pipeline.schedule import gpipe
from worker.pipeline.timeline import link_transfer, makespan

ACTIONS = gpipe(3, 4)
COMPUTE = {(a.stage, a.op, a.microbatch): 0.002 * (a.stage + 1) + (0.003 if a.op == "B" else 0.0) for a in ACTIONS}
BYTES = {(b, op, mb): 40_000 + 1_000 * mb for b in (0, 1) for op in "FB" for mb in range(4)}


def stored_replay():
    """What worker.train stores: actions with their median seconds, transfers with (bytes, messages)."""
    return {
        "schedule": "gpipe",
        "actions": [[*a, COMPUTE[(a.stage, a.op, a.microbatch)]] for a in ACTIONS],
        "transfers": [[*key, nbytes, 1] for key, nbytes in BYTES.items()],
    }


@pytest.fixture
def run_id(submit, settings):
    run_id = submit()["run_ids"][0]
    with db.session_scope(settings.database_url) as session:
        crud.claim_run(run_id, "host", "c", session=session)
        crud.finish_run(run_id, names.SUCCEEDED, summary={"replay": stored_replay()}, session=session)
    return run_id


@pytest.mark.parametrize(("bandwidth_mbps", "latency_ms"), [(10, 1), (100, 0.5), (1000, 0), (10_000, 2)])
def test_planner_equals_makespan_for_the_same_inputs(api, run_id, bandwidth_mbps, latency_ms):
    plan = api.get(f"/api/v1/runs/{run_id}/whatif", params={"bandwidth_mbps": bandwidth_mbps, "latency_ms": latency_ms})
    assert plan.status_code == 200, plan.text
    link = {key: link_transfer(n, bandwidth_mbps, latency_ms) for key, n in BYTES.items()}
    expected = makespan(ACTIONS, COMPUTE, link)
    one_device = makespan(ACTIONS, COMPUTE, {}, serial=True)
    body = plan.json()
    assert body["time_per_batch_s"] == pytest.approx(expected, rel=1e-12)
    assert body["one_device_time_per_batch_s"] == pytest.approx(one_device, rel=1e-12)
    assert body["speedup_vs_one_device"] == pytest.approx(one_device / expected, rel=1e-12)
    assert body["link_time_per_step_s"] == pytest.approx(sum(map(sum, link.values())), rel=1e-12)
    assert (body["run_id"], body["schedule"], body["bandwidth_mbps"]) == (run_id, "gpipe", bandwidth_mbps)


def test_planner_refuses_bad_links_and_runs_without_a_replay(api, submit, run_id):
    bad = api.get(f"/api/v1/runs/{run_id}/whatif", params={"bandwidth_mbps": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "bandwidth_mbps"
    bad = api.get(f"/api/v1/runs/{run_id}/whatif", params={"bandwidth_mbps": 10, "latency_ms": -1})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "latency_ms"
    queued = submit()["run_ids"][0]
    missing = api.get(f"/api/v1/runs/{queued}/whatif", params={"bandwidth_mbps": 10})
    assert missing.status_code == 409 and "no stored replay" in missing.json()["detail"]
    assert api.get("/api/v1/runs/999999/whatif", params={"bandwidth_mbps": 10}).status_code == 404
