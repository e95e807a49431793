"""Compliance: PutComplianceItems, ListComplianceItems, ListResourceComplianceSummaries, ListComplianceSummaries."""
import bisect

from ..awsproto import ApiError
from ..state import decode_token, encode_token, insert_sorted, now

PAGE = 50
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNSPECIFIED")
_SEV_FIELD = {"CRITICAL": "CriticalCount", "HIGH": "HighCount", "MEDIUM": "MediumCount", "LOW": "LowCount",
              "INFORMATIONAL": "InformationalCount", "UNSPECIFIED": "UnspecifiedCount"}
RESOURCE_TYPES = ("ManagedInstance",)


def store_items(t, resource_id, resource_type, ctype, summary, items, upload_type="COMPLETE"):
    """Writes compliance entries (also used by the fleet seeder and command effects)."""
    per_res = t.compliance.get(resource_id)
    if per_res is None:
        per_res = t.compliance[resource_id] = {}
        insert_sorted(t.compliance_ids, resource_id)
    rec = per_res.get(ctype)
    if rec is None or upload_type == "COMPLETE":
        rec = per_res[ctype] = {"ResourceType": resource_type, "items": {}}
    rec["ExecutionSummary"] = summary
    for e in items:
        key = e.get("Id") or e.get("Title") or str(len(rec["items"]))
        rec["items"][key] = e
    t.compliance_version += 1


def put_compliance_items(ctx, p):
    if p["ResourceType"] not in RESOURCE_TYPES:
        raise ApiError("InvalidResourceType", f"Resource type {p['ResourceType']} is not supported.")
    rid = p["ResourceId"]
    if rid not in ctx.tenant.fleet and not rid.startswith(("i-", "mi-")):
        raise ApiError("InvalidResourceId", f"Resource id {rid} is not valid.")
    for e in p["Items"]:
        if "Severity" not in e or "Status" not in e:
            raise ApiError("InvalidItemContentException", "Each compliance item needs Severity and Status.")
    summary = dict(p["ExecutionSummary"])
    store_items(ctx.tenant, rid, p["ResourceType"], p["ComplianceType"], summary,
                [dict(e) for e in p["Items"]], p.get("UploadType", "COMPLETE"))
    return {}


# ------------------------------------------------------------------ filters
def _op(ftype, actual, values):
    a = "" if actual is None else str(actual)
    if ftype == "EQUAL":
        return a in values
    if ftype == "NOT_EQUAL":
        return a not in values
    if ftype == "BEGIN_WITH":
        return any(a.startswith(v) for v in values)
    if ftype == "LESS_THAN":
        return any(a < v for v in values)
    if ftype == "GREATER_THAN":
        return any(a > v for v in values)
    return False


def _filters(p, allowed):
    out = []
    for f in p.get("Filters") or []:
        key = f.get("Key")
        if key not in allowed:
            raise ApiError("InvalidFilter", f"Filter key {key} is not valid. Valid keys: {', '.join(allowed)}")
        out.append((allowed[key], f.get("Type", "EQUAL"), f.get("Values") or []))
    return out


def _match(record, filters):
    return all(_op(ftype, getter(record), values) for getter, ftype, values in filters)


_ITEM_KEYS = {"ComplianceType": lambda r: r["ComplianceType"], "Status": lambda r: r["Status"],
              "Severity": lambda r: r["Severity"], "Id": lambda r: r["Id"], "Title": lambda r: r["Title"],
              "ResourceId": lambda r: r["ResourceId"], "ResourceType": lambda r: r["ResourceType"],
              "ExecutionId": lambda r: r["ExecutionSummary"].get("ExecutionId"),
              "ExecutionType": lambda r: r["ExecutionSummary"].get("ExecutionType"),
              "PatchGroup": lambda r: (r.get("Details") or {}).get("PatchGroup"),
              "Classification": lambda r: (r.get("Details") or {}).get("Classification"),
              "PatchSeverity": lambda r: (r.get("Details") or {}).get("PatchSeverity"),
              "PatchState": lambda r: (r.get("Details") or {}).get("PatchState"),
              "DocumentName": lambda r: (r.get("Details") or {}).get("DocumentName"),
              "AssociationId": lambda r: r["Id"]}


def _resource_iter(t, start_rid, resource_ids):
    """Resource ids in sorted order starting at start_rid (inclusive)."""
    if resource_ids:
        ids = sorted(set(resource_ids))
        i = bisect.bisect_left(ids, start_rid) if start_rid is not None else 0
        return (rid for rid in ids[i:] if rid in t.compliance)
    ids = t.compliance_ids
    i = bisect.bisect_left(ids, start_rid) if start_rid is not None else 0
    return (ids[j] for j in range(i, len(ids)))


def list_compliance_items(ctx, p):
    t = ctx.tenant
    filters = _filters(p, _ITEM_KEYS)
    rtypes = p.get("ResourceTypes")
    if rtypes and any(rt not in RESOURCE_TYPES for rt in rtypes):
        raise ApiError("InvalidResourceType", "ResourceTypes must be ManagedInstance.")
    limit = p.get("MaxResults") or PAGE
    cursor = decode_token("ListComplianceItems", p.get("NextToken"))
    out, last, more = [], None, False
    first_rid = cursor[0] if cursor else None
    for rid in _resource_iter(t, first_rid, p.get("ResourceIds")):
        for ctype in sorted(t.compliance[rid]):
            rec = t.compliance[rid][ctype]
            if rtypes and rec["ResourceType"] not in rtypes:
                continue
            for iid in sorted(rec["items"]):
                key = (rid, ctype, iid)
                if cursor is not None and key <= cursor:
                    continue
                if len(out) >= limit:
                    more = True
                    break
                e = rec["items"][iid]
                row = {"ComplianceType": ctype, "ResourceType": rec["ResourceType"], "ResourceId": rid,
                       "Id": e.get("Id", iid), "Title": e.get("Title", ""), "Status": e["Status"],
                       "Severity": e["Severity"], "ExecutionSummary": rec["ExecutionSummary"],
                       "Details": e.get("Details") or {}}
                last = key
                if _match(row, filters):
                    out.append(row)
            if more:
                break
        if more:
            break
    resp = {"ComplianceItems": out}
    if more:
        resp["NextToken"] = encode_token("ListComplianceItems", list(last))
    return resp


def _severity_summary():
    return {v: 0 for v in _SEV_FIELD.values()}


def resource_summary(rid, ctype, rec):
    comp, non = _severity_summary(), _severity_summary()
    ccount = ncount = 0
    worst = None
    for e in rec["items"].values():
        sev = e.get("Severity", "UNSPECIFIED")
        if e["Status"] == "COMPLIANT":
            comp[_SEV_FIELD[sev]] += 1
            ccount += 1
        else:
            non[_SEV_FIELD[sev]] += 1
            ncount += 1
            if worst is None or SEVERITIES.index(sev) < SEVERITIES.index(worst):
                worst = sev
    return {"ComplianceType": ctype, "ResourceType": rec["ResourceType"], "ResourceId": rid,
            "Status": "NON_COMPLIANT" if ncount else "COMPLIANT",
            "OverallSeverity": worst or "UNSPECIFIED", "ExecutionSummary": rec["ExecutionSummary"],
            "CompliantSummary": {"CompliantCount": ccount, "SeveritySummary": comp},
            "NonCompliantSummary": {"NonCompliantCount": ncount, "SeveritySummary": non}}


_SUMMARY_KEYS = {"ComplianceType": lambda r: r["ComplianceType"], "Status": lambda r: r["Status"],
                 "OverallSeverity": lambda r: r["OverallSeverity"], "ResourceId": lambda r: r["ResourceId"],
                 "ResourceType": lambda r: r["ResourceType"],
                 "ExecutionType": lambda r: r["ExecutionSummary"].get("ExecutionType")}


def list_resource_compliance_summaries(ctx, p):
    t = ctx.tenant
    filters = _filters(p, _SUMMARY_KEYS)
    limit = p.get("MaxResults") or PAGE
    cursor = decode_token("ListResourceComplianceSummaries", p.get("NextToken"))
    out, last, more = [], None, False
    for rid in _resource_iter(t, cursor[0] if cursor else None, None):
        for ctype in sorted(t.compliance[rid]):
            key = (rid, ctype)
            if cursor is not None and key <= cursor:
                continue
            if len(out) >= limit:
                more = True
                break
            row = resource_summary(rid, ctype, t.compliance[rid][ctype])
            last = key
            if _match(row, filters):
                out.append(row)
        if more:
            break
    resp = {"ResourceComplianceSummaryItems": out}
    if more:
        resp["NextToken"] = encode_token("ListResourceComplianceSummaries", list(last))
    return resp


def list_compliance_summaries(ctx, p):
    """Per compliance type: number of resources compliant / non-compliant (severity = overall severity)."""
    t = ctx.tenant
    filters = _filters(p, _SUMMARY_KEYS)
    cache_key = (t.compliance_version, repr(p.get("Filters")))
    if t.compliance_summary_cache and t.compliance_summary_cache[0] == cache_key:
        rows = t.compliance_summary_cache[1]
    else:
        agg = {}
        for rid in t.compliance_ids:
            for ctype, rec in t.compliance[rid].items():
                s = resource_summary(rid, ctype, rec)
                if not _match(s, filters):
                    continue
                a = agg.setdefault(ctype, {"ComplianceType": ctype,
                                           "CompliantSummary": {"CompliantCount": 0,
                                                                "SeveritySummary": _severity_summary()},
                                           "NonCompliantSummary": {"NonCompliantCount": 0,
                                                                   "SeveritySummary": _severity_summary()}})
                if s["Status"] == "COMPLIANT":
                    a["CompliantSummary"]["CompliantCount"] += 1
                    a["CompliantSummary"]["SeveritySummary"][_SEV_FIELD[s["OverallSeverity"]]] += 1
                else:
                    a["NonCompliantSummary"]["NonCompliantCount"] += 1
                    a["NonCompliantSummary"]["SeveritySummary"][_SEV_FIELD[s["OverallSeverity"]]] += 1
        rows = [agg[k] for k in sorted(agg)]
        t.compliance_summary_cache = (cache_key, rows)
    limit = p.get("MaxResults") or PAGE
    start = decode_token("ListComplianceSummaries", p.get("NextToken")) or 0
    page = rows[int(start):int(start) + limit]
    resp = {"ComplianceSummaryItems": page}
    if int(start) + limit < len(rows):
        resp["NextToken"] = encode_token("ListComplianceSummaries", int(start) + limit)
    return resp
