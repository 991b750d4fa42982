"""slimpipe.client and the REST CLI verbs against a real server: uvicorn on a free port, SQLite, embedded broker."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from backend import crud, db, runfiles
from backend.main import create_app
from backend.settings import Settings
from slimpipe import names
from slimpipe.client import Client, ClientError
from slimpipe.commands import compare as compare_cmd
from slimpipe.commands import logs as logs_cmd
from slimpipe.commands import runs as runs_cmd
from slimpipe.commands import submit as submit_cmd
from slimpipe.commands import watch as watch_cmd
from tests.fixtures_servers import free_port

SPEC = {"name": "client-test", "model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "train": {"max_steps": 5}}
TOKEN = "client-test-token"


class Server:
    def __init__(self, settings: Settings, port: int | None = None):
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("client")
    url = f"sqlite:///{tmp / 'slimpipe.db'}"
    db.migrate(url)
    settings = Settings(
        database_url=url, broker_dir=tmp / "broker", data_root=tmp / "data", runs_dir=tmp / "runs", api_token=TOKEN
    )
    with Server(settings) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c


def play_worker(database_url: str, run_id: int, steps: int = 3, delay: float = 0.2, accs=(60.0, 80.0, 75.0)) -> None:
    """What a worker does for one run, straight to SQL."""
    with db.session_scope(database_url) as s:
        assert crud.claim_run(run_id, "test-host", "task", session=s)
    for step in range(1, steps + 1):
        time.sleep(delay)
        with db.session_scope(database_url) as s:
            crud.append_metrics(run_id, [(step, names.TRAIN_LOSS, 1.0 / step), (step, names.VAL_ACC, accs[step - 1])], session=s)
            crud.append_logs(run_id, [f"step {step}"], session=s)
            crud.heartbeat(run_id, step, steps, session=s)
    with db.session_scope(database_url) as s:
        crud.finish_run(run_id, names.SUCCEEDED, summary={"time_per_batch_s": 0.1, "link_time_per_step_s": 0.1}, session=s)


def test_submit_sweep_wait_metrics_logs_compare(client, server, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    run_ids = client.submit(spec_file, sweep={"compression.default.backward.topk": [1, 0.5]}, tags=["client"])
    assert len(run_ids) == 2
    assert [r["id"] for r in client.runs(tag="client")] == sorted(run_ids, reverse=True)
    assert client.run(run_ids[1])["sweep_values"] == {"compression.default.backward.topk": 0.5}

    for run_id in run_ids:
        threading.Thread(target=play_worker, args=(server.settings.database_url, run_id)).start()
    finals = [client.wait(run_id, timeout=30) for run_id in run_ids]
    assert [f["status"] for f in finals] == ["succeeded", "succeeded"]

    series = client.metrics(run_ids[0], names=[names.VAL_ACC])
    assert series[names.VAL_ACC]["value"] == [60.0, 80.0, 75.0]
    assert client.metric_names(run_ids[0]) == [names.TRAIN_LOSS, names.VAL_ACC]
    assert client.logs(run_ids[0]).splitlines()[-1].endswith("INFO step 3")
    assert [line["message"] for line in client.log_lines(run_ids[0])] == ["step 1", "step 2", "step 3"]
    assert yaml.safe_load(client.download(run_ids[0], "spec.yaml"))["name"] == "client-test"

    table = client.compare(run_ids)
    assert table["baseline_run_id"] == run_ids[0]
    assert [r["best_val_acc"] for r in table["runs"]] == [80.0, 80.0]
    assert [r["final_val_acc"] for r in table["runs"]] == [75.0, 75.0]
    assert table["runs"][1]["speedup"] == pytest.approx(1.0)
    with pytest.raises(ClientError, match="no stored replay"):  # runs logged without a replay: see test_planner
        client.whatif(run_ids[0], bandwidth_mbps=10, latency_ms=1)


def test_log_metrics_for_a_run_trained_elsewhere(client):
    run_id = client.submit(SPEC)[0]
    n = client.log_metrics(run_id, [(s, "train/loss", 1.0 / (s + 1)) for s in range(12_000)])
    assert n == 12_000
    full = client.metrics(run_id, max_points=20_000)["train/loss"]
    assert full["step"] == list(range(12_000))
    small = client.metrics(run_id, max_points=100)["train/loss"]
    assert len(small["step"]) <= 100 and small["value"][0] == 1.0
    newer = client.metrics(run_id, since_step=11_997)["train/loss"]
    assert newer["step"] == [11_998, 11_999]


class LosesAnswers(httpx.HTTPTransport):
    """A network that delivers every POST to the service and loses the answers to those that `lose` marks, in turn."""

    def __init__(self, *lose: bool):
        super().__init__()
        self.lose, self.keys = list(lose), []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.keys.append(request.headers.get(names.IDEMPOTENCY_HEADER))
            if self.lose and self.lose.pop(0):
                response.read()  # the service answered; the answer never arrives
                response.close()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response


def _losing(server: Server, *lose: bool, told: list[str], reach: bool = True) -> tuple[Client, LosesAnswers]:
    client = Client(server.url, token=TOKEN, on_wait=told.append)
    network = LosesAnswers(*lose)
    client._http = httpx.Client(base_url=server.url, headers=client._http.headers, transport=network)
    if reach:
        client.runs(limit=1)
    return client, network


def test_a_submission_and_a_metric_batch_whose_answers_were_lost_are_sent_again_and_stored_once(server):
    told: list[str] = []
    client, network = _losing(server, True, False, True, False, told=told)
    with client:
        experiments = len(client.experiments(limit=500))
        [run_id] = client.submit(SPEC, tags=["answer-lost"])  # the first answer lost: sent again, same key
        assert len(client.experiments(limit=500)) == experiments + 1
        assert [r["id"] for r in client.runs(tag="answer-lost")] == [run_id]
        assert client.log_metrics(run_id, [(k, "ext/loss", 1.0 / k) for k in range(1, 4)]) == 3
        assert client.metrics(run_id)["ext/loss"]["step"] == [1, 2, 3]  # each once
    first, again, batch, batch_again = network.keys
    assert first == again and batch == batch_again and len({first, batch}) == 2 and None not in network.keys
    assert told == [
        "POST /api/v1/experiments: no answer (connection reset by peer); trying again for up to 120 s",
        f"POST /api/v1/runs/{run_id}/metrics: no answer (connection reset by peer); trying again for up to 120 s",
    ]


def test_a_clients_first_request_whose_answer_was_lost_is_sent_again(server, client):
    """The connection was made and the request sent, so the service is there even though this client has had
    no answer from it yet: the submission goes again under its key."""
    lossy, network = _losing(server, True, told=[], reach=False)
    with lossy:
        [run_id] = lossy.submit({**SPEC, "name": "first-answer-lost"})
    assert network.keys[0] == network.keys[1] is not None
    assert [r["id"] for r in client.runs(search="first-answer-lost")] == [run_id]


def test_a_retry_whose_answer_was_lost_makes_one_run(server, client):
    run_id = client.submit(SPEC)[0]
    client.cancel(run_id)
    lossy, network = _losing(server, True, told=[])
    with lossy:
        retry = lossy.retry(run_id)
    assert network.keys[0] == network.keys[1] is not None
    assert [r["id"] for r in client.runs(limit=500) if r["retry_of"] == run_id] == [retry["id"]]


def test_a_write_without_a_key_is_not_sent_again_when_its_answer_is_lost(server, client):
    run_id = client.submit(SPEC)[0]
    lossy, network = _losing(server, True, told=[])
    with lossy, pytest.raises(ClientError, match="connection reset by peer"):
        lossy.cancel(run_id)  # stored, but the client cannot know: it says so instead of cancelling twice
    assert network.keys == [None] and client.run(run_id)["status"] == names.CANCELLED


def test_events_cancel_retry_delete(client, server):
    run_id = client.submit(SPEC)[0]
    worker = threading.Thread(target=play_worker, args=(server.settings.database_url, run_id))
    worker.start()
    events = list(client.events(run_id))
    worker.join()
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "status" and events[-1][1]["status"] == "succeeded"
    assert sum(len(data["points"]) for kind, data in events if kind == "metrics") == 6

    queued = client.submit(SPEC)[0]
    assert client.cancel(queued)["status"] == "cancelled"
    retry = client.retry(queued)
    assert (retry["retry_of"], retry["attempt"], retry["status"]) == (queued, 2, "queued")
    client.delete(retry["id"])
    with pytest.raises(ClientError) as info:
        client.run(retry["id"])
    assert info.value.status_code == 404 and f"run {retry['id']} not found" in str(info.value)


def test_errors_carry_the_servers_message(client, server):
    with pytest.raises(ClientError) as info:
        client.submit({**SPEC, "model": {"name": "vgg"}})
    assert info.value.status_code == 422
    assert "model.name: unknown model 'vgg'" in str(info.value)
    assert info.value.detail[0]["field"] == "model.name"
    assert client.validate(SPEC, sweep={"link.bandwidth_mbps": [1, 10, 100]}) == 3

    with pytest.raises(ClientError) as info, Client(server.url, token="wrong") as stranger:
        stranger.runs()
    assert info.value.status_code == 401 and "API token" in str(info.value)

    with pytest.raises(ClientError, match="cannot reach slimpipe at http://127.0.0.1:1"), Client("http://127.0.0.1:1") as nowhere:
        nowhere.runs()


def test_client_reads_url_and_token_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("SLIMPIPE_URL", server.url)
    monkeypatch.setenv("SLIMPIPE_API_TOKEN", TOKEN)
    with Client() as c:
        assert c.url == server.url
        assert c.zoo()["models"]["tiny_mlp"]["default_stages"][-1] == ["head"]


# --------------------------------------------------------------------------- CLI verbs


def cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def test_parse_sweep():
    assert submit_cmd.parse_sweep(["compression.default.backward.topk=1,0.5", "link.bandwidth_mbps=10"]) == {
        "compression.default.backward.topk": [1, 0.5],
        "link.bandwidth_mbps": [10],
    }
    assert submit_cmd.parse_sweep(["compression.default.forward.entropy=null,huffman"]) == {
        "compression.default.forward.entropy": [None, "huffman"]
    }
    from slimpipe.spec import SpecError

    with pytest.raises(SpecError, match="write path=v1,v2"):
        submit_cmd.parse_sweep(["topk"])


def test_read_sweep_takes_a_file_and_the_flags(tmp_path: Path):
    from slimpipe.spec import SpecError

    sweep_file = tmp_path / "grid.sweep.yaml"
    sweep_file.write_text("train.seed: [0, 1]\ncompression.default.backward.topk: [0.1, 0.5]\n")
    assert submit_cmd.read_sweep(str(sweep_file), ["link.bandwidth_mbps=10,100"]) == {
        "train.seed": [0, 1],
        "compression.default.backward.topk": [0.1, 0.5],
        "link.bandwidth_mbps": [10, 100],
    }
    sweep_file.write_text("train.seed: 3\n")
    with pytest.raises(SpecError, match="must map dotted paths to lists of values"):
        submit_cmd.read_sweep(str(sweep_file), [])
    with pytest.raises(SpecError, match="cannot read"):
        submit_cmd.read_sweep(str(tmp_path / "missing.yaml"), [])


def test_cli_submit_wait_runs_watch_logs_compare(server, tmp_path: Path, capsys):
    common = ["--url", server.url, "--token", TOKEN]
    spec_file = tmp_path / "seed.yaml"
    spec_file.write_text(yaml.safe_dump({**SPEC, "name": "cli-seed"}))

    def worker_for_new_runs(count: int) -> None:
        deadline = time.monotonic() + 20
        seen: set[int] = set()
        while len(seen) < count and time.monotonic() < deadline:
            with db.session_scope(server.settings.database_url) as s:
                queued, _ = crud.list_runs(session=s, status=names.QUEUED, tag="via-cli", limit=10)
                fresh = [r.id for r in queued if r.id not in seen]
            for run_id in fresh:
                seen.add(run_id)
                threading.Thread(target=play_worker, args=(server.settings.database_url, run_id, 3, 0.1)).start()
            time.sleep(0.05)

    threading.Thread(target=worker_for_new_runs, args=(2,), daemon=True).start()
    sweep_file = tmp_path / "topk.sweep.yaml"
    sweep_file.write_text("compression.default.backward.topk: [1, 0.5]\n")
    code = cli(submit_cmd, [str(spec_file), "--sweep-file", str(sweep_file), "--tag", "via-cli", "--wait", *common])
    out = capsys.readouterr().out
    assert code == 0, out
    first_line, *rest = out.splitlines()
    assert first_line.startswith("submitted 2 runs: ")
    run_ids = [int(x) for x in first_line.split(": ")[1].split()]
    # While it waits, --wait prints each run's state as it changes, ending with its final one.
    progress = [line for line in rest if line.startswith("run ") and line.split()[1].isdigit()]
    table = rest[len(progress) :]
    for run_id in run_ids:
        mine = [line.split(" step ")[0] for line in progress if line.startswith(f"run {run_id} ")]
        assert mine[-1] == f"run {run_id} succeeded" and len(mine) >= 2, progress
    assert table[0].split()[:3] == ["run", "status", "backward.topk"]
    assert table[2].split()[:3] == [f"{run_ids[0]}*", "succeeded", "1"]
    assert table[-1] == f"* baseline (uncompressed): run {run_ids[0]}"

    assert cli(runs_cmd, ["--tag", "via-cli", *common]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in listed[2:]] == sorted(run_ids, reverse=True)
    assert listed[2].split()[2:4] == ["succeeded", "3/3"]
    assert listed[0].split()[-2:] == ["tags", "error"] and listed[2].split()[-2:] == ["via-cli", "-"]

    assert cli(watch_cmd, [str(run_ids[0]), *common]) == 0
    captured = capsys.readouterr()
    assert f"run {run_ids[0]} succeeded" in captured.out

    # A run that does not exist: one message, no progress bar drawn before it.
    assert cli(watch_cmd, ["9999", *common]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["slimpipe: GET /api/v1/runs/9999: 404 run 9999 not found"]

    assert cli(logs_cmd, [str(run_ids[1]), *common]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("step 3")

    assert cli(compare_cmd, [*map(str, run_ids), "--json", *common]) == 0
    assert '"baseline_run_id":' in capsys.readouterr().out
    with Client(server.url, token=TOKEN) as client:
        client.update_run(run_ids[1], notes="half the bytes, same accuracy\nsee the b1 error")
    assert cli(compare_cmd, [*map(str, run_ids), *common]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"run {run_ids[1]}: half the bytes, same accuracy"

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "pipeline": {"microbatches": 0}}))
    assert cli(submit_cmd, [str(bad), *common]) == 1
    assert "pipeline.microbatches: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_the_cli_shows_the_engines_time_left_only_while_a_run_trains():
    from slimpipe.commands.remote import time_left

    running = {"status": names.RUNNING, "summary": {names.SUMMARY_ETA_S: 47.4, names.SUMMARY_ETA_AT: 1.7e9}}
    assert time_left(running) == "00:47"
    assert time_left({**running, "summary": {names.SUMMARY_ETA_S: 3725}}) == "1:02:05"
    assert time_left({**running, "summary": {}}) is None and time_left({**running, "summary": None}) is None
    assert time_left({**running, "status": names.SUCCEEDED}) is None


def test_cli_submit_set_overrides_fields_before_the_service_stores_the_spec(server, client, tmp_path: Path, capsys):
    common = ["--url", server.url, "--token", TOKEN]
    spec_file = tmp_path / "base.yaml"
    spec_file.write_text(yaml.safe_dump({**SPEC, "name": "cli-set"}))
    sets = ["--set", "train.max_steps=7", "--set", "compression.default.forward.topk=0.25", "--set", "name=cli-set-2"]
    assert cli(submit_cmd, [str(spec_file), *sets, "--tag", "via-set", *common]) == 0
    run_id = int(capsys.readouterr().out.split(": ")[1])
    stored = client.run(run_id)["spec"]
    assert stored["name"] == "cli-set-2"
    assert stored["train"]["max_steps"] == 7
    assert stored["compression"]["default"]["forward"]["topk"] == 0.25

    # A malformed --set and a value the spec refuses: one message naming the field, nothing submitted.
    before = len(client.runs(tag="via-set"))
    assert submit_cmd_main([str(spec_file), "--set", "train.max_steps", *common]) == 2
    assert "write --set as PATH=VALUE" in capsys.readouterr().err
    assert submit_cmd_main([str(spec_file), "--set", "train.max_steps=-3", *common]) == 1
    assert "train.max_steps: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert len(client.runs(tag="via-set")) == before


def submit_cmd_main(argv: list[str]) -> int:
    """Through slimpipe.cli.main, which turns a SpecError into its message and exit code 2."""
    from slimpipe.cli import main

    return main(["submit", *argv])


def test_wait_says_a_run_is_starting_until_its_first_step(capsys):
    """Before its first step a distributed run may spend a minute starting its stages: say so, with the time."""

    class Scripted:  # the service's answers for one run, in order
        def __init__(self, answers: list[dict]):
            self.answers = answers

        def run(self, run_id: int) -> dict:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    running = {"status": names.RUNNING, "progress_step": None, "progress_total": 4, "summary": {}}
    answers = [{"status": names.QUEUED}, running, running, {**running, "progress_step": 2}, {"status": names.SUCCEEDED}]
    final = submit_cmd.wait_with_progress(Scripted(answers), [7], poll_s=1.2, every_s=0.0)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert final == [{"status": names.SUCCEEDED}]
    assert lines[0] == "run 7 queued"
    assert lines[1] == "run 7 running, starting"
    assert lines[2].startswith("run 7 running, starting (no step finished after 1 s)")
    assert lines[3] == "run 7 running step 2/4 (50%)"
    assert lines[4] == "run 7 succeeded"


def test_cli_cancel_and_retry(server, client, capsys):
    from slimpipe.commands import cancel as cancel_cmd
    from slimpipe.commands import retry as retry_cmd

    common = ["--url", server.url, "--token", TOKEN]
    queued = client.submit({**SPEC, "name": "cli-cancel"})[0]
    running = client.submit({**SPEC, "name": "cli-cancel"})[0]
    with db.session_scope(server.settings.database_url) as s:
        assert crud.claim_run(running, "test-host", "task", session=s)
    assert cli(cancel_cmd, [str(queued), str(running), "9999", *common]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"run {queued} cancelled", f"run {running} asked to stop at its next step"]
    assert captured.err.strip() == "slimpipe: POST /api/v1/runs/9999/cancel: 404 run 9999 not found"
    assert client.run(queued)["status"] == names.CANCELLED

    # A running run is refused with the server's reason; a cancelled one comes back as a new attempt.
    assert cli(retry_cmd, [str(running), str(queued), *common]) == 1
    captured = capsys.readouterr()
    assert f"run {running} is running; cancel it before retrying" in captured.err
    (line,) = captured.out.splitlines()
    new_id = int(line.rsplit(" ", 1)[1])
    assert line == f"run {queued} retried as run {new_id}"
    again = client.run(new_id)
    assert (again["retry_of"], again["attempt"], again["status"]) == (queued, 2, names.QUEUED)


def test_cli_edit_adds_and_removes_tags_and_sets_notes(server, client, capsys, tmp_path: Path, monkeypatch):
    from slimpipe.commands import edit as edit_cmd

    common = ["--url", server.url, "--token", TOKEN]
    run_id = client.submit({**SPEC, "name": "cli-edit"}, tags=["draft", "keep"])[0]
    assert cli(edit_cmd, [str(run_id), "--tag", "paper", "--untag", "draft", "--notes", "best at 8 bits", *common]) == 0
    assert capsys.readouterr().out.splitlines() == [f"run {run_id}: tags keep, paper; notes set"]
    assert (client.run(run_id)["tags"], client.run(run_id)["notes"]) == (["keep", "paper"], "best at 8 bits")

    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n")
    assert cli(edit_cmd, [str(run_id), "--notes-file", str(notes), *common]) == 0
    assert client.run(run_id)["notes"] == "line one\nline two"
    assert client.update_run(run_id, notes="")["notes"] is None

    assert cli(edit_cmd, [str(run_id), *common]) == 2
    assert "nothing to change; give --tag, --untag, --notes or --notes-file" in capsys.readouterr().err
    assert cli(edit_cmd, [str(run_id), "--notes-file", str(tmp_path / "missing.txt"), *common]) == 2
    assert "cannot read --notes-file" in capsys.readouterr().err
    assert cli(edit_cmd, ["9999", "--tag", "x", *common]) == 1
    assert "404 run 9999 not found" in capsys.readouterr().err


def test_cli_delete_asks_first_and_removes_runs_with_their_folders(server, client, capsys, monkeypatch):
    import io

    from slimpipe.commands import delete as delete_cmd

    common = ["--url", server.url, "--token", TOKEN]
    first, second = (client.submit({**SPEC, "name": "cli-delete"})[0] for _ in range(2))
    folder = runfiles.run_dir(first, server.settings)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"weights")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal: refused without --yes
    assert cli(delete_cmd, [str(first), *common]) == 1
    assert "cannot be undone; add --yes" in capsys.readouterr().err and client.run(first)["id"] == first

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert cli(delete_cmd, [str(first), *common]) == 1
    assert "delete runs" in capsys.readouterr().out and client.run(first)["id"] == first
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert cli(delete_cmd, [str(first), "9999", *common]) == 1
    captured = capsys.readouterr()
    assert captured.out.endswith(f"[y/N] run {first} deleted\n")
    assert captured.err.strip() == "slimpipe: DELETE /api/v1/runs/9999: 404 run 9999 not found"
    assert not folder.exists()
    with pytest.raises(ClientError, match="404"):
        client.run(first)
    assert cli(delete_cmd, [str(second), "--yes", *common]) == 0
    assert capsys.readouterr().out == f"run {second} deleted\n"


def test_output_into_a_closed_pipe_ends_quietly(server):
    """`slimpipe runs | head -1`: once the reader is gone, exit 141 (SIGPIPE) without a traceback."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "slimpipe", "runs", "--url", server.url, "--token", TOKEN],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_download_checkpoint_unpacks_the_servers_tar(server, client, tmp_path: Path):
    run_id = client.submit({**SPEC, "name": "cli-checkpoint"})[0]
    with db.session_scope(server.settings.database_url) as s:
        assert crud.claim_run(run_id, "h", "t", session=s)
    with pytest.raises(ClientError, match="has no checkpoint on this server") as missing:
        client.download_checkpoint(run_id, tmp_path / "none")
    assert missing.value.status_code == 404
    folder = runfiles.run_dir(run_id, server.settings)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"rank 0")
    (folder / "checkpoint.stage1.pt").write_bytes(b"x" * (2 * (1 << 20) + 3))
    written = client.download_checkpoint(run_id, tmp_path / "got")
    assert written == [tmp_path / "got" / "checkpoint.pt", tmp_path / "got" / "checkpoint.stage1.pt"]
    assert [p.read_bytes() for p in written] == [b"rank 0", b"x" * (2 * (1 << 20) + 3)]


def test_cli_download_saves_each_kind(server, client, tmp_path: Path, capsys):
    from slimpipe.commands import download as download_cmd

    common = ["--url", server.url, "--token", TOKEN]
    run_id = client.submit({**SPEC, "name": "cli-download"})[0]
    with db.session_scope(server.settings.database_url) as s:
        crud.append_metrics(run_id, [(1, names.TRAIN_LOSS, 0.5, 1000.0)], session=s)
        crud.append_logs(run_id, ["hello"], session=s)
    for what, check in (
        ("metrics.csv", lambda text: text.splitlines() == ["step,name,value,time", "1,train/loss,0.5,1000.0"]),
        ("metrics.jsonl", lambda text: '"name": "train/loss"' in text),
        ("spec", lambda text: yaml.safe_load(text)["name"] == "cli-download"),
        ("log", lambda text: text.rstrip().endswith("INFO hello")),
    ):
        out = tmp_path / what
        assert cli(download_cmd, [str(run_id), what, "--out", str(out), *common]) == 0
        assert capsys.readouterr().out.strip() == str(out) and check(out.read_text()), what
    assert cli(download_cmd, [str(run_id), "checkpoint", "--out", str(tmp_path / "ck"), *common]) == 1
    assert "has no checkpoint on this server" in capsys.readouterr().err
    with db.session_scope(server.settings.database_url) as s:
        assert crud.claim_run(run_id, "h", "t", session=s)
    folder = runfiles.run_dir(run_id, server.settings)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"weights")
    assert cli(download_cmd, [str(run_id), "checkpoint", "--out", str(tmp_path / "ck"), *common]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ck" / "checkpoint.pt")
    assert (tmp_path / "ck" / "checkpoint.pt").read_bytes() == b"weights"
