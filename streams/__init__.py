"""The stream application: processors wired to topics, routing, sinks and workers."""
