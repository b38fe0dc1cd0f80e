"""The ``[shipping]`` section of the agent config."""

from __future__ import annotations

import dataclasses

from agent.api import field


@dataclasses.dataclass
class ShippingConfig:
    enabled: bool = field(True, "Ship samples and events to an ingest; with no ingest_url, a local ingest is embedded.")
    ingest_url: str = field("", "URL of the central ingest (https://...); empty starts an embedded ingest on 127.0.0.1.")
