"""The warm estimator child's protocol (loradeck.trainer.gpu.estimate_service): JSON lines in, one answer per
question, only the newest of the questions that waited, and an end at stdin's end or after its idle time."""

from __future__ import annotations

import io
import json
import os
import threading

from loradeck.trainer.gpu import estimate_service
from tests.waiting import wait_until


class Lines:
    """A stdout that keeps each JSON line it is given."""

    def __init__(self):
        self.messages: list[dict] = []

    def write(self, text: str) -> None:
        self.messages += [json.loads(line) for line in text.splitlines() if line.strip()]

    def flush(self) -> None:
        pass


def test_only_the_newest_of_the_questions_that_waited_is_answered(monkeypatch):
    monkeypatch.setattr(estimate_service, "warm_up", lambda: None)
    busy, release = threading.Event(), threading.Event()

    def answer(question):
        if question["id"] == 1:  # the first trace runs while three more questions arrive
            busy.set()
            release.wait(30)
        return {"id": question["id"], "ok": True, "config": question["config"]}

    monkeypatch.setattr(estimate_service, "answer", answer)
    read_end, write_end = os.pipe()
    stdin, ask = os.fdopen(read_end, "r"), os.fdopen(write_end, "w")
    out = Lines()
    server = threading.Thread(target=estimate_service.serve, args=(stdin, out), kwargs={"idle_seconds": 30})
    server.start()
    ask.write(json.dumps({"id": 1, "config": {"rank": 1}}) + "\n")
    ask.flush()
    busy.wait(30)
    for qid in (2, 3, 4):
        ask.write(json.dumps({"id": qid, "config": {"rank": qid}}) + "\n")
    ask.flush()
    threading.Timer(0.5, release.set).start()
    wait_until(lambda: len(out.messages) >= 3, timeout=30, message="two answers")
    ask.close()
    server.join(30)
    assert not server.is_alive()  # stdin's end ends the service
    assert out.messages[0]["ready"] is True
    assert [m["id"] for m in out.messages[1:]] == [1, 4]  # 2 and 3 were overtaken by 4
    assert out.messages[2]["config"] == {"rank": 4}


def test_a_bad_line_gets_a_one_line_error_and_the_service_goes_on(monkeypatch):
    monkeypatch.setattr(estimate_service, "warm_up", lambda: None)
    out = Lines()
    estimate_service.serve(io.StringIO("not json\n"), out, idle_seconds=5)
    assert out.messages[1] == {"id": None, "ok": False, "error": "not a JSON object: 'not json'"}
    bad_config = estimate_service.answer({"id": 7, "config": {"resolution": "big"}})
    assert bad_config["id"] == 7 and bad_config["ok"] is False and "resolution" in bad_config["error"]


def test_the_service_leaves_after_its_idle_time(monkeypatch):
    monkeypatch.setattr(estimate_service, "warm_up", lambda: None)
    read_end, write_end = os.pipe()
    out = Lines()
    try:
        server = threading.Thread(target=estimate_service.serve, args=(os.fdopen(read_end, "r"), out),
                                  kwargs={"idle_seconds": 0.3}, daemon=True)
        server.start()
        server.join(30)
        assert not server.is_alive() and out.messages == [out.messages[0]] and out.messages[0]["ready"]
    finally:
        os.close(write_end)


def test_a_real_question_is_answered_with_the_estimate():
    out = Lines()
    config = {"base_model": "synthetic:tiny", "resolution": 64, "batch_size": 2}
    estimate_service.serve(io.StringIO(json.dumps({"id": 1, "config": config}) + "\n"), out)
    ready, answer = out.messages
    assert ready["ready"] and ready["seconds"] > 0
    from loradeck.trainer.config.train_config import TrainConfig
    from loradeck.trainer.gpu import vram_estimate

    direct = vram_estimate.estimate(TrainConfig(**config))
    assert answer["id"] == 1 and answer["ok"] is True
    assert answer["expected_peak_bytes"] == direct.expected_peak_bytes
    assert answer["breakdown"] == direct.breakdown
