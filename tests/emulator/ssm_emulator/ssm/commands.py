"""Run Command against the emulated fleet: SendCommand, ListCommands, ListCommandInvocations,
GetCommandInvocation. Invocations complete after `delay_seconds` (control API; default 0), evaluated lazily."""
import uuid

from ..awsproto import ApiError
from ..fleet import apply_patch_install
from ..state import decode_token, encode_token, iso, now, parse_time
from .documents import doc_name, exists, resolve_targets

PAGE = 50


def _plugin_name(doc, platform):
    if doc == "AWS-RunPatchBaseline":
        return "PatchWindows" if platform == "Windows" else "PatchLinux"
    if doc == "AWS-RunPowerShellScript" or platform == "Windows" and doc != "AWS-RunShellScript":
        return "aws:runPowerShellScript"
    return "aws:runShellScript"


def send_command(ctx, p):
    t = ctx.tenant
    doc = doc_name(p["DocumentName"])
    if not exists(t, doc):
        raise ApiError("InvalidDocument", f"Document {doc} does not exist.")
    ids, targets = p.get("InstanceIds") or [], p.get("Targets") or []
    if ids and targets:
        raise ApiError("ValidationException", "Specify either InstanceIds or Targets, not both.")
    if not ids and not targets:
        raise ApiError("ValidationException", "Specify InstanceIds or Targets.")
    if len(set(ids)) != len(ids):
        raise ApiError("DuplicateInstanceId", "Duplicate instance ids in InstanceIds.")
    bad = [i for i in ids if i not in t.fleet or t.fleet[i]["state"] == "terminated"]
    if bad:
        raise ApiError("InvalidInstanceId", f"Instances {bad} not in a valid state for account 123456789012")
    nodes = resolve_targets(t, targets, ids)
    ts = now()
    cid = str(uuid.uuid4())
    cfg = t.command_config
    cmd = {"CommandId": cid, "DocumentName": doc, "DocumentVersion": p.get("DocumentVersion", "$DEFAULT"),
           "Comment": p.get("Comment", ""), "ExpiresAfter": ts + (p.get("TimeoutSeconds") or 3600) + 600,
           "Parameters": p.get("Parameters") or {}, "InstanceIds": ids, "Targets": targets,
           "RequestedDateTime": ts, "Status": "Pending", "StatusDetails": "Pending",
           "OutputS3Region": p.get("OutputS3Region", ctx.region), "OutputS3BucketName": p.get("OutputS3BucketName", ""),
           "OutputS3KeyPrefix": p.get("OutputS3KeyPrefix", ""), "MaxConcurrency": p.get("MaxConcurrency", "50"),
           "MaxErrors": p.get("MaxErrors", "0"), "TargetCount": len(nodes), "CompletedCount": 0, "ErrorCount": 0,
           "DeliveryTimedOutCount": 0, "ServiceRole": p.get("ServiceRoleArn", ""),
           "NotificationConfig": p.get("NotificationConfig") or {"NotificationArn": "", "NotificationEvents": [],
                                                                 "NotificationType": ""},
           "CloudWatchOutputConfig": p.get("CloudWatchOutputConfig") or {"CloudWatchLogGroupName": "",
                                                                         "CloudWatchOutputEnabled": False},
           "TimeoutSeconds": p.get("TimeoutSeconds", 3600),
           "_done_at": ts + float(cfg.get("delay_seconds", 0)), "_finalised": False, "_nodes": nodes}
    t.commands[cid] = cmd
    t.command_order.append(cid)
    for iid in nodes:
        node = t.fleet[iid]
        t.invocations[(cid, iid)] = {
            "CommandId": cid, "InstanceId": iid, "InstanceName": node.get("ComputerName", ""),
            "Comment": cmd["Comment"], "DocumentName": doc, "DocumentVersion": cmd["DocumentVersion"],
            "RequestedDateTime": ts, "Status": "Pending", "StatusDetails": "Pending", "TraceOutput": "",
            "StandardOutputUrl": "", "StandardErrorUrl": "", "ServiceRole": cmd["ServiceRole"],
            "NotificationConfig": cmd["NotificationConfig"], "CloudWatchOutputConfig": cmd["CloudWatchOutputConfig"],
            "_plugin": _plugin_name(doc, node["PlatformType"]), "_code": -1, "_output": ""}
    response = {k: v for k, v in cmd.items() if not k.startswith("_")}
    refresh(t, cmd)
    return {"Command": response}


def refresh(t, cmd):
    """Completes a command's invocations once its time has come (applies the patch effect once)."""
    if cmd["_finalised"]:
        return
    ts = now()
    if ts < cmd["_done_at"]:
        if cmd["Status"] == "Pending" and cmd["_nodes"]:
            cmd["Status"] = cmd["StatusDetails"] = "InProgress"
            for iid in cmd["_nodes"]:
                inv = t.invocations[(cmd["CommandId"], iid)]
                online = t.fleet.get(iid, {}).get("PingStatus") == "Online"
                inv["Status"] = "InProgress" if online else "Delayed"
                inv["StatusDetails"] = "InProgress" if online else "Delayed"
        return
    cfg = t.command_config
    fail = set(cfg.get("fail_instances") or [])
    fail_doc = doc_name(cmd["DocumentName"]) in set(cfg.get("fail_documents") or [])
    params = cmd["Parameters"]
    patch_install = (cmd["DocumentName"] == "AWS-RunPatchBaseline"
                     and "Install" in (params.get("Operation") or []) and cfg.get("patch_effect", True))
    done = errors = timed_out = 0
    for iid in cmd["_nodes"]:
        inv = t.invocations[(cmd["CommandId"], iid)]
        node = t.fleet.get(iid)
        if node is None or node["PingStatus"] != "Online" or node["state"] != "running":
            inv.update(Status="TimedOut", StatusDetails="Undeliverable", _code=-1,
                       _output="The command could not be delivered to the managed node.")
            timed_out += 1
        elif iid in fail or fail_doc:
            inv.update(Status="Failed", StatusDetails="Failed", _code=1, _output="failed to run commands: exit status 1")
            errors += 1
            done += 1
            if patch_install:
                apply_patch_install(t, iid, False, ts, cmd["CommandId"])
        else:
            inv.update(Status="Success", StatusDetails="Success", _code=0, _output="")
            done += 1
            if patch_install:
                apply_patch_install(t, iid, True, ts, cmd["CommandId"])
        inv["_end"] = ts
    cmd.update(CompletedCount=done + timed_out, ErrorCount=errors, DeliveryTimedOutCount=timed_out)
    if errors:
        cmd["Status"] = cmd["StatusDetails"] = "Failed"
    elif timed_out:
        cmd["Status"], cmd["StatusDetails"] = ("TimedOut", "Delivery Timed Out") if not done else \
            ("Success", "Incomplete")
    else:
        cmd["Status"] = cmd["StatusDetails"] = "Success"
    cmd["_finalised"] = True


def _public(d):
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _filters(p):
    preds = []
    for f in p.get("Filters") or []:
        key, value = f["key"], f["value"]
        if key == "InvokedAfter":
            ts = parse_time(value)
            preds.append(lambda c, ts=ts: c["RequestedDateTime"] >= ts)
        elif key == "InvokedBefore":
            ts = parse_time(value)
            preds.append(lambda c, ts=ts: c["RequestedDateTime"] <= ts)
        elif key == "Status":
            preds.append(lambda c, v=value: c["Status"] == v)
        elif key == "DocumentName":
            preds.append(lambda c, v=value: c["DocumentName"] == v)
        elif key == "ExecutionStage":
            preds.append(lambda c, v=value: (c["Status"] in ("Pending", "InProgress", "Delayed")) ==
                         (v == "Executing"))
        else:
            raise ApiError("InvalidFilterKey", f"The filter key {key} is not valid.")
    return preds


def _command(t, cid):
    cmd = t.commands.get(cid)
    if cmd is None:
        raise ApiError("InvalidCommandId", f"Command {cid} does not exist.")
    return cmd


def list_commands(ctx, p):
    t = ctx.tenant
    preds = _filters(p)
    iid = p.get("InstanceId")
    if p.get("CommandId"):
        order = [_command(t, p["CommandId"])["CommandId"]]
    else:
        order = t.command_order
    limit = p.get("MaxResults") or PAGE
    start = decode_token("ListCommands", p.get("NextToken"))
    idx = (len(order) if start is None else int(start)) - 1
    out = []
    while idx >= 0 and len(out) < limit:
        cmd = t.commands[order[idx]]
        idx -= 1
        refresh(t, cmd)
        if iid and iid not in cmd["_nodes"]:
            continue
        if all(pr(cmd) for pr in preds):
            out.append(_public(cmd))
    resp = {"Commands": out}
    if idx >= 0:
        resp["NextToken"] = encode_token("ListCommands", idx + 1)
    return resp


def _invocation_record(inv, details):
    rec = _public(inv)
    if details:
        rec["CommandPlugins"] = [{
            "Name": inv["_plugin"], "Status": inv["Status"] if inv["Status"] != "Delayed" else "Pending",
            "StatusDetails": inv["StatusDetails"], "ResponseCode": inv["_code"],
            "ResponseStartDateTime": inv["RequestedDateTime"], "ResponseFinishDateTime": inv.get("_end", 0) or None,
            "Output": inv["_output"], "StandardOutputUrl": "", "StandardErrorUrl": "", "OutputS3Region": "",
            "OutputS3BucketName": "", "OutputS3KeyPrefix": ""}]
        if rec["CommandPlugins"][0]["ResponseFinishDateTime"] is None:
            del rec["CommandPlugins"][0]["ResponseFinishDateTime"]
    else:
        rec["CommandPlugins"] = []
    return rec


def list_command_invocations(ctx, p):
    t = ctx.tenant
    preds = _filters(p)
    iid = p.get("InstanceId")
    cids = [_command(t, p["CommandId"])["CommandId"]] if p.get("CommandId") else list(reversed(t.command_order))
    limit = p.get("MaxResults") or PAGE
    cursor = decode_token("ListCommandInvocations", p.get("NextToken"))
    ci, ni = (0, 0) if cursor is None else (int(cursor[0]), int(cursor[1]))
    out = []
    while ci < len(cids) and len(out) < limit:
        cmd = t.commands[cids[ci]]
        refresh(t, cmd)
        nodes = cmd["_nodes"]
        while ni < len(nodes) and len(out) < limit:
            node_id = nodes[ni]
            ni += 1
            if iid and node_id != iid:
                continue
            inv = t.invocations[(cmd["CommandId"], node_id)]
            if all(pr(inv) for pr in preds):
                out.append(_invocation_record(inv, p.get("Details", False)))
        if ni >= len(nodes):
            ci, ni = ci + 1, 0
    resp = {"CommandInvocations": out}
    if ci < len(cids):
        resp["NextToken"] = encode_token("ListCommandInvocations", [ci, ni])
    return resp


def get_command_invocation(ctx, p):
    t = ctx.tenant
    cmd = t.commands.get(p["CommandId"])
    if cmd is None:
        raise ApiError("InvalidCommandId", f"Command {p['CommandId']} does not exist.")
    refresh(t, cmd)
    inv = t.invocations.get((p["CommandId"], p["InstanceId"]))
    if inv is None:
        raise ApiError("InvocationDoesNotExist", "An invocation of this command does not exist for the instance.")
    if p.get("PluginName") and p["PluginName"] != inv["_plugin"]:
        raise ApiError("InvalidPluginName", f"Plugin {p['PluginName']} is not part of the document.")
    end = inv.get("_end")
    resp = {"CommandId": inv["CommandId"], "InstanceId": inv["InstanceId"], "Comment": inv["Comment"],
            "DocumentName": inv["DocumentName"], "DocumentVersion": inv["DocumentVersion"],
            "PluginName": inv["_plugin"], "ResponseCode": inv["_code"],
            "ExecutionStartDateTime": iso(inv["RequestedDateTime"]),
            "ExecutionElapsedTime": f"PT{(end - inv['RequestedDateTime']) if end else 0:.3f}S",
            "ExecutionEndDateTime": iso(end) if end else "", "Status": inv["Status"],
            "StatusDetails": inv["StatusDetails"], "StandardOutputContent": inv["_output"] if inv["_code"] == 0 else "",
            "StandardOutputUrl": "", "StandardErrorContent": inv["_output"] if inv["_code"] not in (0, -1) else "",
            "StandardErrorUrl": "", "CloudWatchOutputConfig": inv["CloudWatchOutputConfig"]}
    return resp


def dump(t):
    for cid in t.command_order:
        refresh(t, t.commands[cid])
    return [{**_public(t.commands[cid]),
             "Invocations": [_invocation_record(t.invocations[(cid, i)], True) for i in t.commands[cid]["_nodes"]]}
            for cid in t.command_order]
