"""Fault-injection rules and per-(tenant, operation) counters."""
import itertools
import random
import threading

_ids = itertools.count(1)


class FaultRule:
    FIELDS = ("operation", "throttle_rate", "error_rate", "latency_ms", "tenant", "seed", "max_hits")

    def __init__(self, spec):
        unknown = set(spec) - set(self.FIELDS) - {"id"}
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        self.id = int(spec.get("id") or next(_ids))
        self.operation = spec.get("operation", "*")
        self.throttle_rate = float(spec.get("throttle_rate", 0) or 0)
        self.error_rate = float(spec.get("error_rate", 0) or 0)
        self.latency_ms = int(spec.get("latency_ms", 0) or 0)
        self.tenant = spec.get("tenant")
        self.seed = spec.get("seed")
        self.max_hits = spec.get("max_hits")
        for name in ("throttle_rate", "error_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within 0..1")
        self.rng = random.Random(self.seed)
        self.hits = 0

    def matches(self, tenant, operation):
        if self.tenant is not None and self.tenant != tenant:
            return False
        if self.max_hits is not None and self.hits >= int(self.max_hits):
            return False
        if self.operation in ("*", operation):
            return True
        if self.operation.endswith(":*"):
            return operation.split(":", 1)[0] == self.operation[:-2]
        return False

    def to_json(self):
        d = {f: getattr(self, f) for f in self.FIELDS}
        d["id"] = self.id
        d["hits"] = self.hits
        return d


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self.rules = []

    def add(self, spec):
        rule = FaultRule(spec)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self, rule_id=None, tenant=None):
        with self._lock:
            if rule_id is not None:
                self.rules = [r for r in self.rules if r.id != int(rule_id)]
            elif tenant is not None:
                self.rules = [r for r in self.rules if r.tenant != tenant]
            else:
                self.rules = []

    def list(self):
        with self._lock:
            return [r.to_json() for r in self.rules]

    def decide(self, tenant, operation):
        """Returns (latency_ms, outcome) with outcome in None | "throttle" | "error"."""
        latency, outcome = 0, None
        with self._lock:
            for rule in self.rules:
                if not rule.matches(tenant, operation):
                    continue
                rule.hits += 1
                latency += rule.latency_ms
                if outcome is None and rule.throttle_rate and rule.rng.random() < rule.throttle_rate:
                    outcome = "throttle"
                elif outcome is None and rule.error_rate and rule.rng.random() < rule.error_rate:
                    outcome = "error"
        return latency, outcome


class Counters:
    KEYS = ("calls", "ok", "errors", "throttled", "injected_errors")

    def __init__(self):
        self._lock = threading.Lock()
        self.data = {}

    def record(self, tenant, operation, kind):
        with self._lock:
            c = self.data.setdefault(tenant, {}).setdefault(operation, dict.fromkeys(self.KEYS, 0))
            c["calls"] += 1
            c[kind] += 1

    def snapshot(self, tenant=None):
        with self._lock:
            if tenant is not None:
                return {k: dict(v) for k, v in self.data.get(tenant, {}).items()}
            return {t: {k: dict(v) for k, v in ops.items()} for t, ops in self.data.items()}

    def reset(self, tenant=None):
        with self._lock:
            if tenant is None:
                self.data.clear()
            else:
                self.data.pop(tenant, None)


FAULTS = Faults()
COUNTERS = Counters()
