"""JSON schemas for the Prometheus Operator custom resources the chart renders.

kubernetes-validate only knows the built-in Kubernetes kinds. These schemas
cover PodMonitor, ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1)
strictly: every field the operator accepts on the objects the chart writes is
listed, anything else is rejected, so a misspelt or misplaced key fails the
test instead of being silently dropped by the API server's pruning.
"""

DURATION = {
    "type": "string",
    # The operator's Duration: units in decreasing order, each at most once.
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

OBJECT_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string", "minLength": 1},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}

LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

NAMESPACE_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "any": {"type": "boolean"},
        "matchNames": {"type": "array", "items": {"type": "string"}},
    },
}

RELABEL_CONFIG = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                "replace", "Replace", "keep", "Keep", "drop", "Drop",
                "hashmod", "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase", "Uppercase",
                "keepequal", "KeepEqual", "dropequal", "DropEqual",
            ]
        },
    },
}

RELABELINGS = {"type": "array", "items": RELABEL_CONFIG}

# Fields common to PodMonitor and ServiceMonitor endpoints (authentication
# and TLS blocks are accepted as objects without looking inside).
ENDPOINT_COMMON = {
    "path": {"type": "string"},
    "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
    "params": {"type": "object"},
    "interval": DURATION,
    "scrapeTimeout": DURATION,
    "honorLabels": {"type": "boolean"},
    "honorTimestamps": {"type": "boolean"},
    "trackTimestampsStaleness": {"type": "boolean"},
    "relabelings": RELABELINGS,
    "metricRelabelings": RELABELINGS,
    "tlsConfig": {"type": "object"},
    "basicAuth": {"type": "object"},
    "oauth2": {"type": "object"},
    "authorization": {"type": "object"},
    "bearerTokenSecret": {"type": "object"},
    "proxyUrl": {"type": "string"},
    "followRedirects": {"type": "boolean"},
    "enableHttp2": {"type": "boolean"},
    "filterRunning": {"type": "boolean"},
}

MONITOR_COMMON = {
    "jobLabel": {"type": "string"},
    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
    "selector": LABEL_SELECTOR,
    "namespaceSelector": NAMESPACE_SELECTOR,
    "sampleLimit": {"type": "integer", "minimum": 0},
    "targetLimit": {"type": "integer", "minimum": 0},
    "labelLimit": {"type": "integer", "minimum": 0},
    "labelNameLengthLimit": {"type": "integer", "minimum": 0},
    "labelValueLengthLimit": {"type": "integer", "minimum": 0},
    "keepDroppedTargets": {"type": "integer", "minimum": 0},
    "attachMetadata": {"type": "object"},
    "scrapeClass": {"type": "string"},
}


def _resource(kind, spec):
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": OBJECT_META,
            "spec": spec,
        },
    }


POD_MONITOR = _resource(
    "PodMonitor",
    {
        "type": "object",
        "required": ["selector", "podMetricsEndpoints"],
        "additionalProperties": False,
        "properties": dict(
            MONITOR_COMMON,
            podMetricsEndpoints={
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": dict(
                        ENDPOINT_COMMON,
                        port={"type": "string"},
                        portNumber={"type": "integer", "minimum": 1, "maximum": 65535},
                    ),
                },
            },
        ),
    },
)

SERVICE_MONITOR = _resource(
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": dict(
            MONITOR_COMMON,
            targetLabels={"type": "array", "items": {"type": "string"}},
            endpoints={
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": dict(
                        ENDPOINT_COMMON,
                        port={"type": "string"},
                        targetPort={"type": ["string", "integer"]},
                    ),
                },
            },
        ),
    },
)

RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "record": {"type": "string", "minLength": 1},
        "alert": {"type": "string", "minLength": 1},
        "expr": {"type": ["string", "integer"]},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
}

PROMETHEUS_RULE = _resource(
    "PrometheusRule",
    {
        "type": "object",
        "required": ["groups"],
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "query_offset": DURATION,
                        "limit": {"type": "integer", "minimum": 0},
                        "labels": STRING_MAP,
                        "partial_response_strategy": {"type": "string"},
                        "rules": {"type": "array", "items": RULE},
                    },
                },
            }
        },
    },
)

BY_KIND = {
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}
