"""Fleet reads: DescribeInstanceInformation; Change Calendar: GetCalendarState."""
import bisect

from ..awsproto import ApiError
from ..fleet import public_node
from ..state import decode_token, encode_token, iso, now, parse_time

PAGE = 50
_FIELD = {"AgentVersion": "AgentVersion", "PingStatus": "PingStatus", "PlatformTypes": "PlatformType",
          "ActivationIds": "ActivationId", "IamRole": "IamRole", "ResourceType": "ResourceType",
          "AssociationStatus": "AssociationStatus"}


def _predicates(p):
    ids, preds = None, []
    pairs = [(f["key"], f["valueSet"]) for f in p.get("InstanceInformationFilterList") or []]
    pairs += [(f["Key"], f["Values"]) for f in p.get("Filters") or []]
    for key, values in pairs:
        if not values:
            raise ApiError("InvalidInstanceInformationFilterValue", f"Filter {key} needs at least one value.")
        if key == "InstanceIds":
            ids = set(values) if ids is None else ids & set(values)
        elif key in _FIELD:
            field = _FIELD[key]
            preds.append(lambda n, f=field, v=set(values): n.get(f) in v)
        elif key.startswith("tag:"):
            tag = key[4:]
            preds.append(lambda n, k=tag, v=set(values): n["tags"].get(k) in v)
        elif key == "tag-key":
            preds.append(lambda n, v=set(values): any(k in v for k in n["tags"]))
        else:
            raise ApiError("InvalidFilterKey", f"The filter key {key} is not valid.")
    return ids, preds


def describe_instance_information(ctx, p):
    t = ctx.tenant
    ids, preds = _predicates(p)
    if ids is not None:
        unknown = sorted(i for i in ids if i not in t.fleet or t.fleet[i]["state"] == "terminated")
        if unknown:
            raise ApiError("InvalidInstanceId", f"Instances {unknown} are not valid managed nodes.")
        source = sorted(ids)
    else:
        source = t.fleet_ids
    limit = p.get("MaxResults") or PAGE
    cursor = decode_token("DescribeInstanceInformation", p.get("NextToken"))
    i = bisect.bisect_right(source, cursor) if cursor is not None else 0
    out = []
    while i < len(source) and len(out) < limit:
        node = t.fleet[source[i]]
        i += 1
        if node["state"] == "terminated":
            continue
        if all(pr(node) for pr in preds):
            out.append(public_node(node))
    resp = {"InstanceInformationList": out}
    if i < len(source):
        resp["NextToken"] = encode_token("DescribeInstanceInformation", source[i - 1])
    return resp


# ------------------------------------------------------------------ Change Calendar
def calendar_state(cal, at):
    """(state, next_transition) of a calendar {default_state, events:[{start,end}]} at epoch `at`."""
    default = cal.get("default_state", "OPEN")
    other = "CLOSED" if default == "OPEN" else "OPEN"
    events = sorted((e["start"], e["end"]) for e in cal.get("events", []))
    state = default
    nxt = None
    for s, e in events:
        if s <= at < e:
            state = other
            nxt = e
            break
    if nxt is None:
        upcoming = [s for s, _ in events if s > at]
        nxt = min(upcoming) if upcoming else None
    if cal.get("state"):
        state = cal["state"]
        nxt = cal.get("next_transition_time", nxt)
    return state, nxt


def _calendar_name(ref):
    if ref.startswith("arn:"):
        return ref.rsplit("/", 1)[-1]
    return ref


def get_calendar_state(ctx, p):
    t = ctx.tenant
    at_raw = p.get("AtTime")
    try:
        at = parse_time(at_raw) if at_raw else now()
    except ValueError:
        raise ApiError("ValidationException", f"AtTime {at_raw} is not a valid ISO 8601 string.")
    state, transitions = "OPEN", []
    for ref in p["CalendarNames"]:
        cal = t.calendars.get(_calendar_name(ref))
        if cal is None:
            raise ApiError("InvalidDocument", f"Calendar {ref} does not exist.")
        s, nxt = calendar_state(cal, at)
        if s == "CLOSED":
            state = "CLOSED"
        if nxt is not None:
            transitions.append(float(nxt))
    resp = {"State": state, "AtTime": iso(at)}
    if transitions:
        resp["NextTransitionTime"] = iso(min(transitions))
    return resp
