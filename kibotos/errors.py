"""One exception root for the project.

Every error that can reach a user or an operator carries a stable ``reason_code``
(a short snake_case string shown in reports and dashboards).
"""


class KibotosError(Exception):
    """Root of every error raised by Kibotos code."""

    reason_code = "internal_error"

    def __init__(self, message: str, *, reason_code: str | None = None):
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class BundleError(KibotosError):
    """A submission bundle cannot be opened or is structurally invalid."""

    reason_code = "bundle_malformed"


class UnknownRobotModel(KibotosError):
    reason_code = "unknown_robot_model"


class ConfigError(KibotosError):
    reason_code = "config_invalid"


class SerializationError(KibotosError):
    """A record cannot be encoded to / decoded from its Avro schema."""

    reason_code = "undecodable_record"


class ServiceError(KibotosError):
    """A backing service (broker, object store, ClickHouse) failed or is unreachable."""

    reason_code = "service_unavailable"
