"""Per-tenant state (keyed by access key id) and shared helpers for pagination and time."""
import base64
import binascii
import json
import threading
import time
from datetime import datetime, timezone

from .awsproto import ApiError


def now():
    return time.time()


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value):
    """Accepts epoch numbers or ISO-8601 strings; returns epoch seconds (float)."""
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip()
    try:
        return float(s)
    except ValueError:
        pass
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def encode_token(kind, key):
    raw = json.dumps({"t": kind, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_token(kind, token):
    """Returns the cursor key stored in a NextToken; InvalidNextToken when it is not ours/not for this op."""
    if token is None or token == "":
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data.get("t") != kind:
            raise ValueError
        k = data["k"]
        return tuple(k) if isinstance(k, list) else k
    except (ValueError, KeyError, binascii.Error, TypeError, AttributeError):
        raise ApiError("InvalidNextToken", "The specified token isn't valid.")


class Tenant:
    """All emulated SSM state of one access key id. Guard every access with `lock`."""

    def __init__(self, akid):
        self.akid = akid
        self.lock = threading.RLock()
        self.region = "us-east-1"
        # OpsCenter
        self.opsitems = {}            # id -> item dict (wire shape, timestamps as float)
        self.opsitem_order = []       # ids in creation order
        self.opsitem_quota = None     # int or None
        self.opsitem_dedup = {}       # lower-cased dedup string -> set(ids)
        # compliance: resource_id -> {ctype -> {"ResourceType", "ExecutionSummary", "items": {id: entry}}}
        self.compliance = {}
        self.compliance_ids = []      # sorted resource ids
        self.compliance_version = 0
        self.compliance_summary_cache = None
        # inventory: instance id -> {type -> item}; lazily materialised for seeded nodes
        self.inventory = {}
        self.inventory_ids = []       # sorted ids having inventory
        self.custom_schemas = {}      # type -> {attr: datatype}
        # fleet: id -> node dict
        self.fleet = {}
        self.fleet_ids = []           # sorted
        # automation
        self.automations = {}
        self.automation_order = []
        self.client_tokens = {}       # token -> (exec id, doc, params)
        self.documents = {}           # name -> {"DocumentType": ...}
        # change calendars
        self.calendars = {}
        # associations
        self.associations = {}
        self.association_order = []
        self.association_runs = []
        # run command
        self.commands = {}
        self.command_order = []
        self.invocations = {}         # (command id, instance id) -> invocation
        self.command_config = {"delay_seconds": 0.0, "patch_effect": True, "fail_instances": [],
                               "fail_documents": []}


class Store:
    def __init__(self):
        self._lock = threading.Lock()
        self._tenants = {}

    def get(self, akid, region=None):
        with self._lock:
            t = self._tenants.get(akid)
            if t is None:
                t = self._tenants[akid] = Tenant(akid)
                if region:
                    t.region = region
            return t

    def existing(self, akid):
        with self._lock:
            return self._tenants.get(akid)

    def reset(self, akid=None):
        with self._lock:
            if akid is None:
                self._tenants.clear()
            else:
                self._tenants.pop(akid, None)

    def tenants(self):
        with self._lock:
            return list(self._tenants)


STORE = Store()


def insert_sorted(lst, value):
    import bisect
    i = bisect.bisect_left(lst, value)
    if i == len(lst) or lst[i] != value:
        lst.insert(i, value)
