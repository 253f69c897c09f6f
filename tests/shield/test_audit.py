import json

from garrison.shield.audit import AuditLog


def _log(tmp_path, n: int = 5) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(n):
        log.append("policy_decision", {"i": i, "decision": "allow"})
    return log


def _lines(log: AuditLog) -> list[dict]:
    return [json.loads(line) for line in log.path.read_text().splitlines()]


def _write(log: AuditLog, records: list[dict]) -> None:
    log.path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_intact_log_verifies(tmp_path) -> None:
    log = _log(tmp_path)
    report = log.verify()
    assert report.ok and report.records == 5 and not report.problems
    records = _lines(log)
    assert records[0]["prev"] == "0" * 64 and records[1]["prev"] == records[0]["hash"]
    assert AuditLog(tmp_path / "missing.log").verify().ok  # an empty log is a valid log


def test_detects_edit(tmp_path) -> None:
    log = _log(tmp_path)
    records = _lines(log)
    records[2]["data"]["decision"] = "refuse"
    _write(log, records)
    report = log.verify()
    assert not report.ok and any(p["seq"] == 2 and "edited" in p["problem"] for p in report.problems)


def test_detects_insert(tmp_path) -> None:
    log = _log(tmp_path)
    records = _lines(log)
    forged = dict(records[1], data={"i": 99})
    _write(log, records[:2] + [forged] + records[2:])
    assert not log.verify().ok


def test_detects_delete_in_the_middle_and_at_the_end(tmp_path) -> None:
    log = _log(tmp_path)
    records = _lines(log)
    _write(log, records[:2] + records[3:])
    assert not log.verify().ok
    _write(log, records[:4])  # tail cut off: the chain is valid but shorter than the head file says
    report = log.verify()
    assert not report.ok and "removed" in report.problems[-1]["problem"]
    _write(log, records)
    assert log.verify().ok
