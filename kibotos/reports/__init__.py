"""Verification reports: the model (``model``), the HTML page (``html``), reading them
back (``reads``) and the read-only HTTP API that serves them (``server``)."""
