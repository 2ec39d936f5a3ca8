"""Local infrastructure: the embedded Tansu broker launcher and ClickHouse migrations.

Production deployments bring their own Kafka cluster and ClickHouse server; the code
here only starts what the embedded stack and the test suite need on this machine.
"""
