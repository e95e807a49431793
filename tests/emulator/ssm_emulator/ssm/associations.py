"""State Manager: CreateAssociation, ListAssociations, StartAssociationsOnce."""
import re
import uuid

from ..awsproto import ApiError
from ..state import decode_token, encode_token, now, parse_time
from .documents import doc_name, exists, resolve_targets

PAGE = 50
_SCHEDULE = re.compile(r"^(cron|rate|at)\(.+\)$")


def create_association(ctx, p):
    t = ctx.tenant
    name = doc_name(p["Name"])
    if not exists(t, name):
        raise ApiError("InvalidDocument", f"Document {name} does not exist.")
    iid = p.get("InstanceId")
    if iid and p.get("Targets"):
        raise ApiError("InvalidTarget", "Specify either InstanceId or Targets, not both.")
    if iid and (iid not in t.fleet or t.fleet[iid]["state"] == "terminated"):
        raise ApiError("InvalidInstanceId", f"Instance {iid} is not a valid managed node.")
    if iid and any(a.get("InstanceId") == iid and a["Name"] == name for a in t.associations.values()):
        raise ApiError("AssociationAlreadyExists", f"An association of {name} with {iid} already exists.")
    sched = p.get("ScheduleExpression")
    if sched and not _SCHEDULE.match(sched):
        raise ApiError("InvalidSchedule", f"The schedule expression {sched} is not valid.")
    for cal in p.get("CalendarNames") or []:
        if doc_name(cal) not in t.calendars:
            raise ApiError("InvalidDocument", f"Calendar {cal} does not exist.")
    ts = now()
    aid = str(uuid.uuid4())
    a = {"Name": name, "AssociationVersion": "1", "Date": ts, "LastUpdateAssociationDate": ts,
         "Status": {"Date": ts, "Name": "Associated", "Message": "Associated with " + name},
         "Overview": {"Status": "Pending", "DetailedStatus": "Creating"},
         "DocumentVersion": p.get("DocumentVersion", "$DEFAULT"), "Parameters": p.get("Parameters") or {},
         "AssociationId": aid, "Targets": p.get("Targets") or ([{"Key": "InstanceIds", "Values": [iid]}] if iid else []),
         "ApplyOnlyAtCronInterval": p.get("ApplyOnlyAtCronInterval", False)}
    if iid:
        a["InstanceId"] = iid
    for k in ("ScheduleExpression", "OutputLocation", "AssociationName", "AutomationTargetParameterName",
              "MaxErrors", "MaxConcurrency", "ComplianceSeverity", "SyncCompliance", "CalendarNames",
              "TargetLocations", "ScheduleOffset", "Duration", "TargetMaps", "AlarmConfiguration"):
        if p.get(k) is not None:
            a[k] = p[k]
    t.associations[aid] = a
    t.association_order.append(aid)
    return {"AssociationDescription": dict(a)}


_LIST_KEYS = ("Name", "InstanceId", "AssociationId", "AssociationVersion", "DocumentVersion", "Targets",
              "LastExecutionDate", "Overview", "ScheduleExpression", "AssociationName", "ScheduleOffset", "Duration",
              "TargetMaps")


def _pred(f):
    key, value = f["key"], f["value"]
    if key == "InstanceId":
        return lambda a: a.get("InstanceId") == value or any(
            tg.get("Key") == "InstanceIds" and value in tg.get("Values", []) for tg in a["Targets"])
    if key == "Name":
        return lambda a: a["Name"] == value
    if key == "AssociationId":
        return lambda a: a["AssociationId"] == value
    if key == "AssociationName":
        return lambda a: a.get("AssociationName") == value
    if key == "AssociationStatusName":
        return lambda a: a["Overview"]["Status"] == value
    if key in ("LastExecutedBefore", "LastExecutedAfter"):
        ts = parse_time(value)
        if key == "LastExecutedBefore":
            return lambda a: a.get("LastExecutionDate") is not None and a["LastExecutionDate"] < ts
        return lambda a: a.get("LastExecutionDate") is not None and a["LastExecutionDate"] > ts
    return lambda a: False


def list_associations(ctx, p):
    t = ctx.tenant
    preds = [_pred(f) for f in p.get("AssociationFilterList") or []]
    limit = p.get("MaxResults") or PAGE
    i = int(decode_token("ListAssociations", p.get("NextToken")) or 0)
    out = []
    order = t.association_order
    while i < len(order) and len(out) < limit:
        a = t.associations[order[i]]
        i += 1
        if all(pr(a) for pr in preds):
            out.append({k: a[k] for k in _LIST_KEYS if k in a})
    resp = {"Associations": out}
    if i < len(order):
        resp["NextToken"] = encode_token("ListAssociations", i)
    return resp


def start_associations_once(ctx, p):
    t = ctx.tenant
    for aid in p["AssociationIds"]:
        if aid not in t.associations:
            raise ApiError("InvalidAssociation", f"Association {aid} does not exist.")
    ts = now()
    for aid in p["AssociationIds"]:
        a = t.associations[aid]
        targets = resolve_targets(t, a["Targets"], [a["InstanceId"]] if a.get("InstanceId") else None)
        t.association_runs.append({"AssociationId": aid, "Name": a["Name"], "Time": ts, "Targets": targets,
                                   "Parameters": a["Parameters"], "Trigger": "StartAssociationsOnce"})
        a["LastExecutionDate"] = ts
        a["LastSuccessfulExecutionDate"] = ts
        a["Overview"] = {"Status": "Success", "DetailedStatus": "Success",
                         "AssociationStatusAggregatedCount": {"Success": len(targets)}}
    return {}
