"""The agent: runtime, config, exposition and shipping (``hostmond.agent``)."""
