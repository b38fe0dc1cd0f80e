"""The status contract between the ingest and the agent's sender, checked against the docs.

Every reason the ingest can answer has one status (``hostmond.ingest.decode.STATUS``),
the table in docs/ingest.md says the same, and the agent's sender drops exactly
the statuses that table marks as dropped and retries the others: a permanent
refusal is never retried, and a temporary one (a busy ingest, clock skew) never
loses the batch.
"""

from __future__ import annotations

import re
from pathlib import Path

from hostmond.agent.shipping import sender
from hostmond.ingest.decode import STATUS

DOC = Path(__file__).resolve().parents[2] / "docs" / "ingest.md"


def _doc_table() -> dict[int, tuple[set[str], str]]:
    rows: dict[int, tuple[set[str], str]] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| (\d{3}) \| (.*) \| (.*) \|$", line)
        if m and int(m.group(1)) >= 400:
            rows[int(m.group(1))] = (set(re.findall(r"`([a-z_]+)`", m.group(2))), m.group(3))
    return rows


def test_docs_table_lists_every_reason_with_the_status_the_ingest_answers() -> None:
    table = _doc_table()
    documented = {reason: status for status, (reasons, _) in table.items() for reason in reasons if reason in STATUS}
    assert documented == STATUS


def test_the_sender_drops_exactly_what_the_docs_say_is_dropped_and_retries_the_rest() -> None:
    for status, (reasons, agent_does) in _doc_table().items():
        outcome, _ = sender.classify(status)
        if agent_does.startswith("drops"):
            assert outcome == sender.DROP, (status, reasons)
        else:
            assert agent_does.startswith("retries"), (status, agent_does)
            assert outcome == sender.RETRY, (status, reasons)
    # the statuses the issue names are never retried
    for status in (400, 401, 403, 413):
        assert sender.classify(status)[0] == sender.DROP
    for status in (429, 500, 502, 503, 504):
        assert sender.classify(status)[0] == sender.RETRY


def test_every_reason_is_a_4xx_or_a_retryable_503() -> None:
    for reason, status in STATUS.items():
        assert 400 <= status < 500 or (status == 503 and sender.classify(status)[0] == sender.RETRY), reason
