"""Inventory: PutInventory, GetInventory, ListInventoryEntries, GetInventorySchema."""
import bisect
import hashlib
import json
import random

from ..awsproto import ApiError
from ..fleet import CUSTOM_TYPE, make_node, node_inventory
from ..state import decode_token, encode_token, insert_sorted

PAGE = 50
AWS_TYPES = ("AWS:Application", "AWS:AWSComponent", "AWS:ComplianceItem", "AWS:ComplianceSummary", "AWS:File",
             "AWS:InstanceDetailedInformation", "AWS:InstanceInformation", "AWS:Network", "AWS:PatchSummary",
             "AWS:Registry", "AWS:ResourceGroup", "AWS:Service", "AWS:Tag", "AWS:WindowsRole", "AWS:WindowsUpdate",
             "AWS:BillingInfo")
_NUMBER_ATTRS = {"Size"}
_standard_schema = None


def _standard():
    """Schema of the standard AWS types, derived from the generator's own output (Windows + Linux)."""
    global _standard_schema
    if _standard_schema is None:
        from ..state import Tenant
        t = Tenant("schema")
        schema = {}
        for windows in (0.0, 1.0):
            node = make_node(random.Random(1), {"windows_fraction": windows}, 1.7e9)
            t.fleet[node["InstanceId"]] = node
            t.compliance[node["InstanceId"]] = {"Patch": {"ResourceType": "ManagedInstance", "items": {},
                                                          "ExecutionSummary": {"ExecutionTime": 1.7e9}}}
            for tname, item in node_inventory(t, node["InstanceId"]).items():
                if tname.startswith("AWS:"):
                    attrs = schema.setdefault(tname, {})
                    for row in item["Content"] or [{}]:
                        for k in row:
                            attrs[k] = "number" if k in _NUMBER_ATTRS or k.endswith("Count") else "string"
        schema.setdefault("AWS:Tag", {"Key": "string", "Value": "string"})
        _standard_schema = schema
    return _standard_schema


def _known_type(t, name):
    return name in AWS_TYPES or name in t.custom_schemas or name == CUSTOM_TYPE


def put_inventory(ctx, p):
    t = ctx.tenant
    iid = p["InstanceId"]
    node = t.fleet.get(iid)
    if node is None or node["state"] == "terminated":
        raise ApiError("InvalidInstanceId", f"Instance {iid} is not a managed node of this account.")
    for item in p["Items"]:
        name = item["TypeName"]
        if name.startswith("AWS:") and name not in AWS_TYPES:
            raise ApiError("InvalidTypeNameException", f"The parameter type name {name} is not valid.")
        if name.startswith("Custom:") and len(name) <= len("Custom:"):
            raise ApiError("InvalidTypeNameException", f"The parameter type name {name} is not valid.")
        content = item.get("Content") or []
        attrs = {}
        for row in content:
            for k, v in row.items():
                num = _is_number(v)
                attrs[k] = "number" if num and attrs.get(k, "number") == "number" else "string"
        if name.startswith("Custom:"):
            known = t.custom_schemas.get(name)
            if known is None and len(t.custom_schemas) >= 20:
                raise ApiError("CustomSchemaCountLimitExceededException",
                               "You have exceeded the limit for custom schemas.")
            merged = dict(known or {})
            for k, dt in attrs.items():
                merged[k] = "string" if merged.get(k) == "string" else dt
            t.custom_schemas[name] = merged
    for item in p["Items"]:
        content = item.get("Content") or []
        stored = {"TypeName": item["TypeName"], "SchemaVersion": item["SchemaVersion"],
                  "CaptureTime": item["CaptureTime"],
                  "ContentHash": item.get("ContentHash") or
                  hashlib.md5(json.dumps(content, sort_keys=True).encode()).hexdigest(),
                  "Content": [dict(r) for r in content]}
        t.inventory.setdefault(iid, {})[item["TypeName"]] = stored
    insert_sorted(t.inventory_ids, iid)
    return {"Message": ""}


def _is_number(v):
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _cmp(op, actual, values):
    if op == "Exists":
        return actual is not None
    if actual is None:
        return False
    if op == "Equal":
        return actual in values
    if op == "NotEqual":
        return actual not in values
    if op == "BeginWith":
        return any(actual.startswith(v) for v in values)
    if op in ("LessThan", "GreaterThan"):
        for v in values:
            try:
                a, b = float(actual), float(v)
            except ValueError:
                a, b = actual, v
            if (a < b) if op == "LessThan" else (a > b):
                return True
    return False


def _parse_filters(t, filters, default_type=None):
    parsed = []
    for f in filters or []:
        key = f["Key"]
        if "." in key and key.split(".", 1)[0].startswith(("AWS:", "Custom:")):
            tname, attr = key.split(".", 1)
        elif default_type:
            tname, attr = default_type, key
        else:
            raise ApiError("InvalidFilter", f"The filter key {key} is not valid: use <TypeName>.<Attribute>.")
        if not _known_type(t, tname):
            raise ApiError("InvalidFilter", f"The filter type {tname} is not valid.")
        parsed.append((tname, attr, f.get("Type", "Equal"), f["Values"]))
    return parsed


def _entity_matches(t, iid, filters, cache):
    for tname, attr, op, values in filters:
        if tname not in cache:
            cache.update(node_inventory(t, iid, only=tname))
        item = cache.get(tname)
        rows = item["Content"] if item else []
        if op == "NotEqual":
            if not rows or not all(_cmp(op, r.get(attr), values) for r in rows):
                return False
        elif not any(_cmp(op, r.get(attr), values) for r in rows):
            return False
    return True


def get_inventory(ctx, p):
    t = ctx.tenant
    if p.get("Aggregators"):
        raise ApiError("InvalidAggregatorException", "Aggregators are not supported by the emulator.")
    filters = _parse_filters(t, p.get("Filters"))
    attrs = [a["TypeName"] for a in p.get("ResultAttributes") or []]
    for a in attrs:
        if not _known_type(t, a):
            raise ApiError("InvalidResultAttributeException", f"The result attribute {a} is not valid.")
    wanted = attrs or ["AWS:InstanceInformation"]
    status_filtered = any(f[0] == "AWS:InstanceInformation" and f[1] == "InstanceStatus" for f in filters)
    limit = p.get("MaxResults") or PAGE
    cursor = decode_token("GetInventory", p.get("NextToken"))
    ids = t.inventory_ids
    i = bisect.bisect_right(ids, cursor) if cursor is not None else 0
    out = []
    while i < len(ids) and len(out) < limit:
        iid = ids[i]
        i += 1
        node = t.fleet.get(iid)
        if node is not None and node["state"] == "terminated" and not status_filtered:
            continue   # AWS hides terminated nodes unless InstanceStatus is filtered on
        cache = {}
        if not _entity_matches(t, iid, filters, cache):
            continue
        data = {}
        for w in wanted:
            if w not in cache:
                cache.update(node_inventory(t, iid, only=w))
            if w in cache:
                it = cache[w]
                data[w] = {k: it[k] for k in ("TypeName", "SchemaVersion", "CaptureTime", "ContentHash", "Content")}
        if not data:
            continue
        out.append({"Id": iid, "Data": data})
    resp = {"Entities": out}
    if i < len(ids):
        resp["NextToken"] = encode_token("GetInventory", ids[i - 1])
    return resp


def list_inventory_entries(ctx, p):
    t = ctx.tenant
    iid, tname = p["InstanceId"], p["TypeName"]
    if iid not in t.fleet and iid not in t.inventory:
        raise ApiError("InvalidInstanceId", f"Instance {iid} is not a managed node of this account.")
    if not _known_type(t, tname):
        raise ApiError("InvalidTypeNameException", f"The parameter type name {tname} is not valid.")
    filters = _parse_filters(t, p.get("Filters"), default_type=tname)
    item = node_inventory(t, iid, only=tname).get(tname)
    resp = {"TypeName": tname, "InstanceId": iid, "Entries": []}
    if item is None:
        return resp
    resp["SchemaVersion"] = item["SchemaVersion"]
    resp["CaptureTime"] = item["CaptureTime"]
    rows = item["Content"]
    limit = p.get("MaxResults") or PAGE
    start = int(decode_token("ListInventoryEntries", p.get("NextToken")) or 0)
    i, out = start, []
    while i < len(rows) and len(out) < limit:
        row = rows[i]
        i += 1
        if all(_cmp(op, row.get(attr), values) for tn, attr, op, values in filters if tn == tname):
            out.append(row)
    resp["Entries"] = out
    if i < len(rows):
        resp["NextToken"] = encode_token("ListInventoryEntries", i)
    return resp


def get_inventory_schema(ctx, p):
    t = ctx.tenant
    schemas = []
    std = _standard()
    for name in sorted(set(std) | set(t.custom_schemas) | {CUSTOM_TYPE}):
        attrs = t.custom_schemas.get(name) or std.get(name)
        if attrs is None and name == CUSTOM_TYPE:
            attrs = {"Owner": "string", "Environment": "string", "CostCenter": "number"}
        schemas.append({"TypeName": name, "Version": "1.0",
                        "Attributes": [{"Name": k, "DataType": v} for k, v in sorted(attrs.items())]})
    wanted = p.get("TypeName")
    if wanted:
        schemas = [s for s in schemas if s["TypeName"] == wanted]
        if not schemas and not wanted.startswith("Custom:"):
            raise ApiError("InvalidTypeNameException", f"The parameter type name {wanted} is not valid.")
    limit = p.get("MaxResults") or 50
    start = int(decode_token("GetInventorySchema", p.get("NextToken")) or 0)
    resp = {"Schemas": schemas[start:start + limit]}
    if start + limit < len(schemas):
        resp["NextToken"] = encode_token("GetInventorySchema", start + limit)
    return resp
