"""Control API under /_emulator/ (JSON in/out). See README.md for every endpoint."""
import json
import time
from urllib.parse import parse_qs

from . import fleet as fleet_mod
from .faults import COUNTERS, FAULTS
from .ssm import automation, commands, opsitems
from .ssm.compliance import resource_summary, store_items
from .state import STORE, iso, now, parse_time

STARTED = time.time()


def _resp(body, status=200):
    data = json.dumps(body, default=str).encode()
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))], data


class BadRequest(Exception):
    pass


def _tenant_arg(q, body, required=True):
    tenant = body.get("tenant") or q.get("tenant", [None])[0]
    if required and not tenant:
        raise BadRequest("tenant (access key id) is required")
    return tenant


def handle(environ, raw):
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")[len("/_emulator/"):].strip("/")
    q = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        body = json.loads(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return _route(method, path, q, body)
    except BadRequest as e:
        return _resp({"error": str(e)}, 400)
    except (ValueError, TypeError) as e:
        return _resp({"error": f"{type(e).__name__}: {e}"}, 400)
    except KeyError as e:
        return _resp({"error": f"not found: {e}"}, 404)


def _route(method, path, q, body):
    if path == "health":
        return _resp({"status": "ok", "uptime_seconds": round(time.time() - STARTED, 3),
                      "tenants": len(STORE.tenants())})
    if path == "reset" and method == "POST":
        tenant = _tenant_arg(q, body, required=False)
        STORE.reset(tenant)
        COUNTERS.reset(tenant)
        FAULTS.clear(tenant=tenant) if tenant else FAULTS.clear()
        return _resp({"reset": tenant or "all"})
    if path == "faults":
        if method == "GET":
            return _resp({"rules": FAULTS.list()})
        if method == "POST":
            specs = body.get("rules") if "rules" in body else [body]
            return _resp({"rules": [FAULTS.add(s).to_json() for s in specs]})
        if method == "DELETE":
            FAULTS.clear(rule_id=body.get("id") or q.get("id", [None])[0], tenant=_tenant_arg(q, body, False))
            return _resp({"rules": FAULTS.list()})
    if path == "counters":
        tenant = _tenant_arg(q, body, required=False)
        if method == "DELETE" or (method == "POST" and body.get("reset")):
            COUNTERS.reset(tenant)
            return _resp({"reset": tenant or "all"})
        return _resp({"counters": COUNTERS.snapshot(tenant)})
    if path == "fleet":
        t = STORE.get(_tenant_arg(q, body))
        with t.lock:
            if method == "POST":
                started = time.perf_counter()
                out = fleet_mod.seed(t, body)
                out["seconds"] = round(time.perf_counter() - started, 3)
                return _resp(out)
            nodes = [dict(fleet_mod.public_node(t.fleet[i]), Tags=t.fleet[i]["tags"], State=t.fleet[i]["state"])
                     for i in t.fleet_ids]
            return _resp({"count": len(nodes), "nodes": nodes})
    if path == "fleet/node" and method == "POST":
        return _mutate_node(STORE.get(_tenant_arg(q, body)), body)
    if path == "calendars" and method == "POST":
        t = STORE.get(_tenant_arg(q, body))
        cal = {"default_state": body.get("default_state", "OPEN"),
               "events": [{"start": parse_time(e["start"]), "end": parse_time(e["end"])} for e in body.get("events", [])]}
        if body.get("state"):
            cal["state"] = body["state"]
            if body.get("next_transition_time"):
                cal["next_transition_time"] = parse_time(body["next_transition_time"])
        with t.lock:
            t.calendars[body["name"]] = cal
            t.documents[body["name"]] = {"DocumentType": "ChangeCalendar"}
        return _resp({"name": body["name"], "calendar": cal})
    if path.startswith("automations/") and method == "POST":
        t = STORE.get(_tenant_arg(q, body))
        with t.lock:
            return _resp({"AutomationExecution": automation.set_status(t, path.split("/", 1)[1], body)})
    if path == "documents" and method == "POST":
        t = STORE.get(_tenant_arg(q, body))
        with t.lock:
            t.documents[body["name"]] = {"DocumentType": body.get("document_type", "Automation"),
                                         "Versions": [str(v) for v in body.get("versions", ["1"])]}
        return _resp({"name": body["name"], "document": t.documents[body["name"]]})
    if path == "quota" and method == "POST":
        t = STORE.get(_tenant_arg(q, body))
        with t.lock:
            t.opsitem_quota = body.get("opsitems")
        return _resp({"opsitems": t.opsitem_quota})
    if path == "commands/config" and method == "POST":
        t = STORE.get(_tenant_arg(q, body))
        with t.lock:
            for k in ("delay_seconds", "patch_effect", "fail_instances", "fail_documents"):
                if k in body:
                    t.command_config[k] = body[k]
            return _resp(dict(t.command_config))
    if path.startswith("state/") and method == "GET":
        return _dump(path[len("state/"):], STORE.get(_tenant_arg(q, body)))
    raise KeyError(f"{method} /_emulator/{path}")


def _mutate_node(t, body):
    with t.lock:
        iid = body["instance_id"]
        node = t.fleet.get(iid)
        if node is None:
            if not body.get("create"):
                raise KeyError(iid)
            import random
            node = fleet_mod.make_node(random.Random(iid), {}, now())
            node["InstanceId"] = node["SourceId"] = iid
            if iid.startswith("mi-"):
                node["ResourceType"], node["SourceType"] = "ManagedInstance", "AWS::SSM::ManagedInstance"
            fleet_mod.add_node(t, node)
        for key, field in (("ping_status", "PingStatus"), ("agent_version", "AgentVersion"),
                           ("platform_type", "PlatformType"), ("platform_name", "PlatformName"),
                           ("association_status", "AssociationStatus"), ("ip_address", "IPAddress"),
                           ("computer_name", "ComputerName")):
            if key in body:
                node[field] = body[key]
        if "state" in body:
            node["state"] = body["state"]
            if body["state"] != "running" and "ping_status" not in body:
                node["PingStatus"] = "ConnectionLost"
        if "tags" in body:
            node["tags"] = {k: str(v) for k, v in body["tags"].items()}
        if body.get("last_ping_time") is not None:
            node["LastPingDateTime"] = parse_time(body["last_ping_time"])
        for tname, content in (body.get("inventory") or {}).items():
            t.inventory.setdefault(iid, {})[tname] = {
                "TypeName": tname, "SchemaVersion": "1.0", "CaptureTime": iso(now()),
                "ContentHash": str(hash(json.dumps(content, sort_keys=True))), "Content": content}
        for ctype, spec in (body.get("compliance") or {}).items():
            store_items(t, iid, "ManagedInstance", ctype,
                        {"ExecutionTime": now(), "ExecutionType": "Command"}, spec, "COMPLETE")
        return _resp(dict(fleet_mod.public_node(node), Tags=node["tags"], State=node["state"]))


def _dump(what, t):
    with t.lock:
        if what == "opsitems":
            return _resp({"OpsItems": [opsitems.public(t.opsitems[i]) for i in t.opsitem_order],
                          "quota": t.opsitem_quota})
        if what == "automations":
            return _resp({"AutomationExecutions": [
                {k: v for k, v in t.automations[i].items() if not k.startswith("_")} for i in t.automation_order]})
        if what == "commands":
            return _resp({"Commands": commands.dump(t), "config": t.command_config})
        if what == "association-runs":
            return _resp({"Associations": [t.associations[a] for a in t.association_order],
                          "Runs": t.association_runs})
        if what == "compliance":
            return _resp({"Resources": {rid: {ctype: dict(resource_summary(rid, ctype, rec),
                                                          Items=list(rec["items"].values()))
                                              for ctype, rec in t.compliance[rid].items()}
                                        for rid in t.compliance_ids}})
        if what == "inventory":
            return _resp({"Inventory": {iid: fleet_mod.node_inventory(t, iid) for iid in t.inventory_ids}})
    raise KeyError(f"state/{what}")
