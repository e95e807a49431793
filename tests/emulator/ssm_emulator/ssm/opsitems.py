"""OpsCenter: CreateOpsItem, UpdateOpsItem, GetOpsItem, DescribeOpsItems."""
import copy
import json
import secrets
import uuid

from ..awsproto import ACCOUNT_ID, ApiError
from ..state import decode_token, encode_token, now, parse_time

INVALID = "OpsItemInvalidParameterException"
ACTIVE = ("Open", "InProgress")
MAX_VALUE_BYTES = 20 * 1024
PAGE = 50


def _dedup_string(opdata):
    entry = (opdata or {}).get("/aws/dedup")
    if not entry:
        return None
    try:
        value = json.loads(entry.get("Value", ""))
        dedup = value["dedupString"]
        if not isinstance(dedup, str) or not dedup:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ApiError(INVALID, 'The /aws/dedup OperationalData value must be JSON {"dedupString":"..."}',
                       ParameterNames=["OperationalData"])
    return dedup


def _check_common(params):
    sev = params.get("Severity")
    if sev is not None and sev not in ("1", "2", "3", "4"):
        raise ApiError(INVALID, "Severity must be one of 1, 2, 3, 4.", ParameterNames=["Severity"])
    for key, entry in (params.get("OperationalData") or {}).items():
        if len(entry.get("Value", "").encode()) > MAX_VALUE_BYTES:
            raise ApiError(INVALID, f"OperationalData value for key {key} exceeds 20 KB.",
                           ParameterNames=["OperationalData"])
        if key.lower().startswith(("aws", "amazon", "amzn", "ssm")) and not key.startswith("/aws/"):
            raise ApiError(INVALID, f"OperationalData key {key} uses a reserved prefix.",
                           ParameterNames=["OperationalData"])


def _active_duplicate(tenant, dedup, exclude=None):
    for oid in sorted(tenant.opsitem_dedup.get(dedup.lower(), ())):
        item = tenant.opsitems[oid]
        if oid != exclude and item["Status"] in ACTIVE:
            return oid
    return None


def create_ops_item(ctx, p):
    t = ctx.tenant
    _check_common(p)
    dedup = _dedup_string(p.get("OperationalData"))
    if dedup:
        existing = _active_duplicate(t, dedup)
        if existing:
            raise ApiError("OpsItemAlreadyExistsException",
                           f"The OpsItem already exists. OpsItemId: {existing}", OpsItemId=existing)
    if t.opsitem_quota is not None and len(t.opsitems) >= t.opsitem_quota:
        raise ApiError("OpsItemLimitExceededException", "The OpsItem limit has been exceeded.",
                       Limit=t.opsitem_quota, LimitType="OpsItem", ResourceTypes=["OpsItem"])
    oid = "oi-" + secrets.token_hex(6)
    while oid in t.opsitems:
        oid = "oi-" + secrets.token_hex(6)
    ts = now()
    arn_user = f"arn:aws:iam::{ACCOUNT_ID}:user/{ctx.akid}"
    item = {
        "OpsItemId": oid,
        "OpsItemArn": f"arn:aws:ssm:{ctx.region}:{ACCOUNT_ID}:opsitem/{oid}",
        "OpsItemType": p.get("OpsItemType", "/aws/issue"),
        "Title": p["Title"], "Description": p["Description"], "Source": p["Source"],
        "Status": "Open", "CreatedBy": arn_user, "LastModifiedBy": arn_user,
        "CreatedTime": ts, "LastModifiedTime": ts, "Version": str(uuid.uuid4()),
        "OperationalData": copy.deepcopy(p.get("OperationalData") or {}),
        "Notifications": p.get("Notifications") or [], "RelatedOpsItems": p.get("RelatedOpsItems") or [],
    }
    for k in ("Priority", "Severity", "Category", "ActualStartTime", "ActualEndTime", "PlannedStartTime",
              "PlannedEndTime"):
        if p.get(k) is not None:
            item[k] = p[k]
    item["_seq"] = len(t.opsitem_order)
    item["_tags"] = p.get("Tags") or []
    t.opsitems[oid] = item
    t.opsitem_order.append(oid)
    if dedup:
        t.opsitem_dedup.setdefault(dedup.lower(), set()).add(oid)
    return {"OpsItemId": oid, "OpsItemArn": item["OpsItemArn"]}


def _get(t, oid):
    item = t.opsitems.get(oid)
    if item is None:
        raise ApiError("OpsItemNotFoundException", f"OpsItem {oid} does not exist.")
    return item


def update_ops_item(ctx, p):
    t = ctx.tenant
    item = _get(t, p["OpsItemId"])
    _check_common(p)
    old_dedup = _dedup_string(item["OperationalData"])
    new_data = p.get("OperationalData") or {}
    if "/aws/dedup" in new_data and _dedup_string(new_data) != old_dedup:
        raise ApiError(INVALID, "The /aws/dedup OperationalData key cannot be changed.",
                       ParameterNames=["OperationalData"])
    if "/aws/dedup" in (p.get("OperationalDataToDelete") or []) and old_dedup:
        raise ApiError(INVALID, "The /aws/dedup OperationalData key cannot be deleted.",
                       ParameterNames=["OperationalDataToDelete"])
    status = p.get("Status")
    if status in ACTIVE and item["Status"] not in ACTIVE and old_dedup:
        other = _active_duplicate(t, old_dedup, exclude=item["OpsItemId"])
        if other:
            raise ApiError("OpsItemAlreadyExistsException",
                           f"The OpsItem already exists. OpsItemId: {other}", OpsItemId=other)
    for key in p.get("OperationalDataToDelete") or []:
        item["OperationalData"].pop(key, None)
    item["OperationalData"].update(copy.deepcopy(new_data))
    for k in ("Status", "Title", "Description", "Severity", "Priority", "Category", "Notifications",
              "RelatedOpsItems", "ActualStartTime", "ActualEndTime", "PlannedStartTime", "PlannedEndTime"):
        if p.get(k) is not None:
            item[k] = p[k]
    item["LastModifiedTime"] = now()
    item["LastModifiedBy"] = f"arn:aws:iam::{ACCOUNT_ID}:user/{ctx.akid}"
    item["Version"] = str(uuid.uuid4())
    return {}


def public(item):
    return {k: v for k, v in item.items() if not k.startswith("_")}


def get_ops_item(ctx, p):
    return {"OpsItem": public(_get(ctx.tenant, p["OpsItemId"]))}


SUMMARY_KEYS = ("CreatedBy", "CreatedTime", "LastModifiedBy", "LastModifiedTime", "Priority", "Source", "Status",
                "OpsItemId", "Title", "OperationalData", "Category", "Severity", "OpsItemType", "ActualStartTime",
                "ActualEndTime", "PlannedStartTime", "PlannedEndTime")

_STRING_KEYS = {"Status": "Status", "OpsItemId": "OpsItemId", "Title": "Title", "Source": "Source",
                "Category": "Category", "Severity": "Severity", "OpsItemType": "OpsItemType",
                "CreatedBy": "CreatedBy"}
_TIME_KEYS = ("CreatedTime", "LastModifiedTime", "ActualStartTime", "ActualEndTime", "PlannedStartTime",
              "PlannedEndTime")


def _cmp(actual, op, value):
    if actual is None:
        return False
    if op == "Equal":
        return actual == value
    if op == "Contains":
        return str(value).lower() in str(actual).lower()
    if op == "GreaterThan":
        return actual > value
    if op == "LessThan":
        return actual < value
    return False


def _compile_filter(f):
    key, op, values = f["Key"], f["Operator"], f["Values"]
    try:
        if key in _STRING_KEYS:
            field = _STRING_KEYS[key]
            return lambda it: any(_cmp(it.get(field), op, v) for v in values)
        if key == "Priority":
            nums = [int(v) for v in values]
            return lambda it: any(_cmp(it.get("Priority"), op, v) for v in nums)
        if key in _TIME_KEYS:
            times = [parse_time(v) for v in values]
            return lambda it: any(_cmp(it.get(key), op, v) for v in times)
        if key == "OperationalData":
            pairs = [json.loads(v) for v in values]
            pairs = [(d["key"], d["value"]) for d in pairs]
            return lambda it: any(_cmp((it["OperationalData"].get(k) or {}).get("Value"), op, v) for k, v in pairs)
        if key == "OperationalDataKey":
            return lambda it: any(any(_cmp(k, op, v) for k in it["OperationalData"]) for v in values)
        if key == "OperationalDataValue":
            return lambda it: any(any(_cmp(d.get("Value"), op, v) for d in it["OperationalData"].values())
                                  for v in values)
        if key == "ResourceId":
            return lambda it: any(v in (it["OperationalData"].get("/aws/resources") or {}).get("Value", "")
                                  for v in values)
        if key == "AutomationId":
            return lambda it: any(v in (it["OperationalData"].get("/aws/automations") or {}).get("Value", "")
                                  for v in values)
    except (ValueError, KeyError, TypeError):
        raise ApiError(INVALID, f"Invalid value for OpsItemFilter {key}.", ParameterNames=["OpsItemFilters"])
    raise ApiError(INVALID, f"The emulator does not support OpsItemFilter key {key}.",
                   ParameterNames=["OpsItemFilters"])


def describe_ops_items(ctx, p):
    t = ctx.tenant
    preds = [_compile_filter(f) for f in p.get("OpsItemFilters") or []]
    limit = p.get("MaxResults") or PAGE
    start = decode_token("DescribeOpsItems", p.get("NextToken"))
    idx = (len(t.opsitem_order) if start is None else int(start)) - 1   # newest first
    out, last = [], None
    while idx >= 0 and len(out) < limit:
        item = t.opsitems[t.opsitem_order[idx]]
        if all(pred(item) for pred in preds):
            out.append({k: item[k] for k in SUMMARY_KEYS if k in item})
        last = idx
        idx -= 1
    resp = {"OpsItemSummaries": out}
    if idx >= 0 and last is not None:
        resp["NextToken"] = encode_token("DescribeOpsItems", last)
    return resp
