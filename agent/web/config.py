"""The ``[web]`` section: exporter-toolkit web-config.yml in meaning, TOML in form."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class WebConfig:
    pass
