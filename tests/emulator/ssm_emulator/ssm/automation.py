"""Automation: StartAutomationExecution, GetAutomationExecution, DescribeAutomationExecutions."""
import uuid

from ..awsproto import ACCOUNT_ID, ApiError
from ..state import decode_token, encode_token, now, parse_time

PAGE = 50
MAX_IN_PROGRESS = 100
BUILTIN_PREFIXES = ("AWS-", "AWSSupport-", "AWSConfigRemediation-", "AWSEC2-", "AWSPremiumSupport-")
ACTIVE = ("Pending", "InProgress", "Waiting")


def _doc_name(name):
    return name.rsplit("/", 1)[-1] if name.startswith("arn:") else name


def start_automation_execution(ctx, p):
    t = ctx.tenant
    doc = _doc_name(p["DocumentName"])
    params = p.get("Parameters") or {}
    token = p.get("ClientToken")
    if token:
        prev = t.client_tokens.get(token.lower())
        if prev:
            exec_id, pdoc, pparams = prev
            if pdoc != doc or pparams != params:
                raise ApiError("IdempotentParameterMismatch",
                               "Error due to an idempotency token being reused with different parameters.")
            return {"AutomationExecutionId": exec_id}
    if not (doc.startswith(BUILTIN_PREFIXES) or doc in t.documents):
        raise ApiError("AutomationDefinitionNotFoundException", f"Document {doc} does not exist.")
    if doc in t.documents and t.documents[doc].get("DocumentType", "Automation") != "Automation":
        raise ApiError("AutomationDefinitionNotFoundException", f"Document {doc} is not an Automation document.")
    version = p.get("DocumentVersion")
    if version and doc in t.documents and version not in ("$DEFAULT", "$LATEST") and \
            version not in t.documents[doc].get("Versions", ["1"]):
        raise ApiError("AutomationDefinitionVersionNotFoundException", f"Version {version} of {doc} not found.")
    running = sum(1 for e in t.automations.values() if e["AutomationExecutionStatus"] in ACTIVE)
    if running >= MAX_IN_PROGRESS:
        raise ApiError("AutomationExecutionLimitExceededException",
                       f"The number of simultaneously running Automation executions exceeded {MAX_IN_PROGRESS}.")
    exec_id = str(uuid.uuid4())
    ex = {"AutomationExecutionId": exec_id, "DocumentName": doc, "DocumentVersion": version or "1",
          "ExecutionStartTime": now(), "AutomationExecutionStatus": "InProgress", "StepExecutions": [],
          "StepExecutionsTruncated": False, "Parameters": params, "Outputs": {}, "Mode": p.get("Mode", "Auto"),
          "ExecutedBy": f"arn:aws:iam::{ACCOUNT_ID}:user/{ctx.akid}", "AutomationType": "Local",
          "LogFile": "", "_tags": p.get("Tags") or []}
    for k in ("TargetParameterName", "Targets", "TargetMaps", "MaxConcurrency", "MaxErrors", "TargetLocations",
              "AlarmConfiguration"):
        if p.get(k) is not None:
            ex[k] = p[k]
    ex["_seq"] = len(t.automation_order)
    t.automations[exec_id] = ex
    t.automation_order.append(exec_id)
    if token:
        t.client_tokens[token.lower()] = (exec_id, doc, params)
    return {"AutomationExecutionId": exec_id}


_EXEC_KEYS = ("AutomationExecutionId", "DocumentName", "DocumentVersion", "ExecutionStartTime", "ExecutionEndTime",
              "AutomationExecutionStatus", "StepExecutions", "StepExecutionsTruncated", "Parameters", "Outputs",
              "FailureMessage", "Mode", "ParentAutomationExecutionId", "ExecutedBy", "CurrentStepName",
              "CurrentAction", "TargetParameterName", "Targets", "TargetMaps", "MaxConcurrency", "MaxErrors",
              "Target", "TargetLocations", "AlarmConfiguration")
_META_KEYS = ("AutomationExecutionId", "DocumentName", "DocumentVersion", "AutomationExecutionStatus",
              "ExecutionStartTime", "ExecutionEndTime", "ExecutedBy", "LogFile", "Outputs", "Mode",
              "ParentAutomationExecutionId", "CurrentStepName", "CurrentAction", "FailureMessage",
              "TargetParameterName", "Targets", "TargetMaps", "MaxConcurrency", "MaxErrors", "Target",
              "AutomationType", "AlarmConfiguration")


def get_automation_execution(ctx, p):
    ex = ctx.tenant.automations.get(p["AutomationExecutionId"])
    if ex is None:
        raise ApiError("AutomationExecutionNotFoundException",
                       f"Automation execution {p['AutomationExecutionId']} not found.")
    return {"AutomationExecution": {k: ex[k] for k in _EXEC_KEYS if k in ex}}


def _filter(f):
    key, values = f["Key"], f["Values"]
    try:
        if key == "DocumentNamePrefix":
            return lambda e: any(e["DocumentName"].startswith(v) for v in values)
        if key == "ExecutionStatus":
            return lambda e: e["AutomationExecutionStatus"] in values
        if key == "ExecutionId":
            return lambda e: e["AutomationExecutionId"] in values
        if key == "ParentExecutionId":
            return lambda e: e.get("ParentAutomationExecutionId") in values
        if key == "CurrentAction":
            return lambda e: e.get("CurrentAction") in values
        if key == "StartTimeBefore":
            ts = min(parse_time(v) for v in values)
            return lambda e: e["ExecutionStartTime"] < ts
        if key == "StartTimeAfter":
            ts = max(parse_time(v) for v in values)
            return lambda e: e["ExecutionStartTime"] > ts
        if key == "AutomationType":
            return lambda e: e["AutomationType"] in values
        if key == "TagKey":
            return lambda e: any(tag["Key"] in values for tag in e["_tags"])
    except ValueError:
        raise ApiError("InvalidFilterValue", f"The filter value for {key} is not valid.")
    raise ApiError("InvalidFilterKey", f"The filter key {key} is not supported.")


def describe_automation_executions(ctx, p):
    t = ctx.tenant
    preds = [_filter(f) for f in p.get("Filters") or []]
    limit = p.get("MaxResults") or PAGE
    start = decode_token("DescribeAutomationExecutions", p.get("NextToken"))
    idx = (len(t.automation_order) if start is None else int(start)) - 1
    out = []
    while idx >= 0 and len(out) < limit:
        ex = t.automations[t.automation_order[idx]]
        if all(pr(ex) for pr in preds):
            out.append({k: ex[k] for k in _META_KEYS if k in ex})
        idx -= 1
    resp = {"AutomationExecutionMetadataList": out}
    if idx >= 0:
        resp["NextToken"] = encode_token("DescribeAutomationExecutions", idx + 1)
    return resp


def set_status(t, exec_id, spec):
    """Control API: finish (or change) an execution."""
    ex = t.automations.get(exec_id)
    if ex is None:
        raise KeyError(exec_id)
    status = spec.get("status") or spec.get("AutomationExecutionStatus")
    if status:
        ex["AutomationExecutionStatus"] = status
        if status not in ACTIVE:
            ex["ExecutionEndTime"] = float(spec.get("end_time", now()))
        else:
            ex.pop("ExecutionEndTime", None)
    if "outputs" in spec:
        ex["Outputs"] = {k: v if isinstance(v, list) else [str(v)] for k, v in spec["outputs"].items()}
    if "failure_message" in spec:
        ex["FailureMessage"] = spec["failure_message"]
    if "step_executions" in spec:
        ex["StepExecutions"] = spec["step_executions"]
    return {k: ex[k] for k in _EXEC_KEYS if k in ex}
