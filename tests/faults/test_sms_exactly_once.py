"""Every SMS delivered exactly once, against a loopback receiver that does NOT de-duplicate (real
HTTP on 127.0.0.1; it counts every send request per message): 8 concurrent senders (separate
processes over one warehouse), senders killed mid-batch, timeouts after delivery, a provider
that cannot tell what it took, a connection refused. Nothing is sent twice; an ambiguity that
cannot be settled stays ``unknown``, counted, and is not sent again."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.flows.test_sms_flow import MORNING, city, config_file, free_dead_writers_slot, outbox
from kernel.secrets import id_hash_key
from devtools.sms_gateway import LoopbackGateway
from warehouse.connection import open_warehouse

pytestmark = pytest.mark.usefixtures("prefect_server")


def sender(conf: str, cfg, prefect_server: str) -> subprocess.Popen:
    """``tubetrail sms send`` in a process of its own (the session's Prefect server: without an
    API URL each would start a temporary server that a SIGKILL would leave running)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    argv = [sys.executable, "-m", "tubetrail.cli", "--config", conf, "--warehouse", str(cfg.warehouse.path),
            "sms", "send", "--round", "R1", "--as-of", MORNING.isoformat()]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return out


def message_ids(cfg) -> list[str]:
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        return [row[0] for row in con.sql("SELECT message_id FROM sms_outbox ORDER BY 1").fetchall()]


def assert_each_sent_once(gateway: LoopbackGateway, cfg, people: int) -> None:
    ids = message_ids(cfg)
    assert len(ids) == people
    assert gateway.state.posts == {i: 1 for i in ids}  # every message reached the receiver once, none twice
    assert outbox(cfg) == {"sent": people}
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        assert con.sql("SELECT count(*) FROM sms_outbox WHERE claimed_by IS NOT NULL").fetchall() == [(0,)]


def test_eight_concurrent_senders_send_each_message_once(tmp_path, cfg, prefect_server):
    people = 400
    city(tmp_path, cfg, people)
    with LoopbackGateway(dedupe=False, delay_seconds=0.005) as gateway:
        conf = config_file(tmp_path, gateway.url)
        procs = [sender(conf, cfg, prefect_server) for _ in range(8)]
        for proc in procs:
            finish(proc)
    assert gateway.state.duplicates == 0
    assert_each_sent_once(gateway, cfg, people)


def test_senders_killed_mid_batch_and_a_later_sender_send_each_message_once(tmp_path, cfg, prefect_server):
    people = 300
    city(tmp_path, cfg, people)
    with LoopbackGateway(dedupe=False, delay_seconds=0.01) as gateway:
        conf = config_file(tmp_path, gateway.url, timeout=1.0, lease=4.0)
        procs = [sender(conf, cfg, prefect_server) for _ in range(3)]
        deadline = time.monotonic() + 300
        while len(gateway.state.posts) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.communicate(timeout=60)
        halfway = len(gateway.state.posts)
        assert 60 <= halfway < people
        with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
            claimed = {r[0] for r in con.sql("SELECT message_id FROM sms_outbox WHERE state = 'sending'").fetchall()}
        assert claimed  # the dead senders' claims: some sent, some not, nobody can tell which
        free_dead_writers_slot(cfg)
        time.sleep(5.0)  # past their leases (4 s): the warehouse's clock decides, not this one
        finish(sender(conf, cfg, prefect_server))
    assert_each_sent_once(gateway, cfg, people)
    with open_warehouse(cfg.warehouse.path, id_hash_key()) as con:
        audited = [tuple(r) for r in con.sql(
            "SELECT flow_run_id, entity_key FROM audit WHERE entity = 'sms_outbox' AND action = 'reconcile'").fetchall()]
    # every dead sender's claim was looked up and settled, each message once by each run that looked
    # it up. On a loaded machine the last sender's own read timeouts (1 s) add messages looked up for
    # that reason, and a sender that started late may itself look up another's expired claim before
    # it is killed: its lookups and the last sender's are two runs (gate of 2026-12-01 18:09, with a
    # demo beside it: 248 messages looked up by both, each still sent once)
    assert claimed <= {key for _, key in audited} and len(audited) == len(set(audited))


@pytest.mark.parametrize("provider", ["webhook", "twilio", "aliyun"])
def test_a_timeout_after_delivery_is_unknown_then_looked_up_never_sent_twice(tmp_path, cfg, monkeypatch, provider):
    from flows.sms import sms_reminders

    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "test-token")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-loopback")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "loopback-secret")
    people = 12
    city(tmp_path, cfg, people)
    # the first 3 messages are taken, then the answer waits 4 s: the sender's read timeout (1 s) comes after
    with LoopbackGateway(dedupe=False, stall_first=3, stall_seconds=4.0) as gateway:
        conf = config_file(tmp_path, gateway.url, provider, timeout=1.0, lease=8.0)
        first = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
        assert first["unknown"] >= 3 and first["sent"] + first["unknown"] == people
        assert set(gateway.state.posts.values()) == {1} and len(gateway.state.posts) == people
        second = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    assert second["looked_up"]["sent"] == first["unknown"] and second["sent"] == 0
    assert set(gateway.state.posts.values()) == {1} and len(gateway.state.posts) == people
    assert outbox(cfg) == {"sent": people}


def test_a_provider_that_cannot_tell_leaves_the_message_unknown_counted_and_not_sent_again(tmp_path, cfg):
    from flows.sms import sms_reminders

    people = 8
    city(tmp_path, cfg, people)
    with LoopbackGateway(dedupe=False, stall_first=2, stall_seconds=4.0, lookup=False) as gateway:
        conf = config_file(tmp_path, gateway.url, timeout=1.0, lease=8.0)
        first = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
        second = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    unknown = first["unknown"]
    assert unknown >= 2 and first["sent"] == people - unknown
    assert second["looked_up"] == {"sent": 0, "failed": 0, "pending": 0, "unknown": unknown} and second["sent"] == 0
    assert second["counts"]["looked_up_unknown"] == unknown
    assert set(gateway.state.posts.values()) == {1} and len(gateway.state.posts) == people
    assert outbox(cfg) == {"sent": people - unknown, "unknown": unknown}


def test_a_connection_refused_never_left_and_is_sent_by_the_next_run(tmp_path, cfg):
    from flows.sms import sms_reminders

    people = 5
    city(tmp_path, cfg, people)
    with socket.socket() as probe:  # a port nothing listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = config_file(tmp_path, f"http://127.0.0.1:{port}")
    first = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    assert (first["sent"], first["unknown"], first["retry_next_run"]) == (0, 0, people)
    assert outbox(cfg) == {"pending": people}
    with LoopbackGateway(port, dedupe=False) as gateway:
        second = sms_reminders("R1", False, MORNING, conf, cfg.warehouse.path)
    assert second["sent"] == people
    assert_each_sent_once(gateway, cfg, people)
