"""End-to-end tests of the local AWS emulator, using boto3 against a server started on port 0."""
import concurrent.futures
import json
import os
import subprocess
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="session")
def emulator():
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.Popen([os.path.join(HERE, "start"), "--port", "0", "--exit-on-stdin-close"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("EMULATOR_READY http://127.0.0.1:"), line
    url = line.split(" ", 1)[1]
    yield url
    proc.stdin.close()
    proc.wait(timeout=10)


@pytest.fixture
def tenant():
    return "AKIA" + uuid.uuid4().hex[:16].upper()


def ctl(url, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}/_emulator/{path}", method=method, data=data)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def client(url, tenant, service="ssm", **kw):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=tenant,
                        aws_secret_access_key="secret", config=kw.pop("config", NO_RETRY), **kw)


def dedup(s):
    return {"/aws/dedup": {"Type": "SearchableString", "Value": json.dumps({"dedupString": s})}}


def err(exc_info):
    return exc_info.value.response["Error"]["Code"]


# --------------------------------------------------------------------------------- basics
def test_health_and_start_line(emulator):
    assert ctl(emulator, "GET", "health")["status"] == "ok"


def test_passthrough_dynamodb_s3_and_counters(emulator, tenant):
    ddb = client(emulator, tenant, "dynamodb")
    table = f"t-{tenant.lower()}"
    ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})["Item"]["v"] == {"N": "1"}
    s3 = client(emulator, tenant, "s3", config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}))
    bucket = f"bucket-{tenant.lower()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="inv/AWS:Application/x.json", Body=b'{"a":1}\n')
    assert s3.get_object(Bucket=bucket, Key="inv/AWS:Application/x.json")["Body"].read() == b'{"a":1}\n'
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    c = ctl(emulator, "GET", f"counters?tenant={tenant}")["counters"]
    for op in ("dynamodb:CreateTable", "dynamodb:PutItem", "dynamodb:GetItem", "s3:CreateBucket", "s3:PutObject",
               "s3:GetObject", "s3:ListObjectsV2"):
        assert c[op]["calls"] == 1 and c[op]["ok"] == 1, (op, c)
    sns = client(emulator, tenant, "sns")
    sns.create_topic(Name=f"topic-{tenant.lower()}")
    assert ctl(emulator, "GET", f"counters?tenant={tenant}")["counters"]["sns:CreateTopic"]["ok"] == 1


# --------------------------------------------------------------------------------- OpsCenter
def test_opsitems_lifecycle_and_pagination(emulator, tenant):
    ssm = client(emulator, tenant)
    ids = [ssm.create_ops_item(Title=f"item {i}", Description="d", Source="autopilot", Severity="2", Priority=3,
                               Category="Availability",
                               OperationalData={"k": {"Type": "SearchableString", "Value": f"v{i % 3}"}})["OpsItemId"]
           for i in range(60)]
    assert all(i.startswith("oi-") and len(i) == 15 for i in ids)
    item = ssm.get_ops_item(OpsItemId=ids[0])["OpsItem"]
    assert item["Status"] == "Open" and item["Title"] == "item 0" and item["Version"]
    ssm.update_ops_item(OpsItemId=ids[0], Status="Resolved", OperationalData={"n": {"Type": "String", "Value": "1"}},
                        OperationalDataToDelete=["k"])
    item = ssm.get_ops_item(OpsItemId=ids[0])["OpsItem"]
    assert item["Status"] == "Resolved" and "k" not in item["OperationalData"] and "n" in item["OperationalData"]
    pages, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        r = ssm.describe_ops_items(OpsItemFilters=[{"Key": "Status", "Values": ["Open"], "Operator": "Equal"}], **kw)
        pages.append(len(r["OpsItemSummaries"]))
        token = r.get("NextToken")
        if not token:
            break
    assert sum(pages) == 59 and max(pages) <= 50
    r = ssm.describe_ops_items(OpsItemFilters=[{"Key": "OperationalData", "Operator": "Equal",
                                                "Values": [json.dumps({"key": "k", "value": "v1"})]}], MaxResults=50)
    assert len(r["OpsItemSummaries"]) == 20
    with pytest.raises(ClientError) as e:
        ssm.get_ops_item(OpsItemId="oi-000000000000")
    assert err(e) == "OpsItemNotFoundException"
    with pytest.raises(ClientError) as e:
        ssm.create_ops_item(Title="x", Description="d", Source="s", Severity="5")
    assert err(e) == "OpsItemInvalidParameterException"
    with pytest.raises(ClientError) as e:
        ssm.create_ops_item(Title="x" * 1025, Description="d", Source="s")
    assert err(e) == "OpsItemInvalidParameterException"


def test_opsitem_dedup(emulator, tenant):
    ssm = client(emulator, tenant)
    first = ssm.create_ops_item(Title="a", Description="d", Source="s", OperationalData=dedup("Disk-Full:i-1"))["OpsItemId"]
    with pytest.raises(ClientError) as e:
        ssm.create_ops_item(Title="a", Description="d", Source="s", OperationalData=dedup("disk-full:I-1"))
    assert err(e) == "OpsItemAlreadyExistsException"
    assert e.value.response["OpsItemId"] == first
    ssm.update_ops_item(OpsItemId=first, Status="InProgress")
    with pytest.raises(ClientError):
        ssm.create_ops_item(Title="a", Description="d", Source="s", OperationalData=dedup("disk-full:i-1"))
    with pytest.raises(ClientError) as e:
        ssm.update_ops_item(OpsItemId=first, OperationalData=dedup("other"))
    assert err(e) == "OpsItemInvalidParameterException"
    ssm.update_ops_item(OpsItemId=first, Status="Resolved")
    second = ssm.create_ops_item(Title="a", Description="d", Source="s", OperationalData=dedup("disk-full:i-1"))
    assert second["OpsItemId"] != first


def test_opsitem_quota(emulator, tenant):
    ssm = client(emulator, tenant)
    ctl(emulator, "POST", "quota", {"tenant": tenant, "opsitems": 2})
    for _ in range(2):
        ssm.create_ops_item(Title="a", Description="d", Source="s")
    with pytest.raises(ClientError) as e:
        ssm.create_ops_item(Title="a", Description="d", Source="s")
    assert err(e) == "OpsItemLimitExceededException"


def test_tenancy_isolation(emulator, tenant):
    other = tenant + "X"
    a, b = client(emulator, tenant), client(emulator, other)
    oid = a.create_ops_item(Title="a", Description="d", Source="s", OperationalData=dedup("same"))["OpsItemId"]
    b.create_ops_item(Title="a", Description="d", Source="s", OperationalData=dedup("same"))   # no clash
    with pytest.raises(ClientError):
        b.get_ops_item(OpsItemId=oid)
    assert len(ctl(emulator, "GET", f"state/opsitems?tenant={other}")["OpsItems"]) == 1


# --------------------------------------------------------------------------------- compliance
def test_compliance(emulator, tenant):
    ssm = client(emulator, tenant)
    seeded = ctl(emulator, "POST", "fleet", {"tenant": tenant, "count": 30, "seed": 7, "noncompliant_fraction": 0.5})
    node = seeded["first_ids"][0]
    items = [{"Id": f"c{i}", "Title": f"check {i}", "Severity": "HIGH", "Status": "COMPLIANT" if i % 2 else "NON_COMPLIANT"}
             for i in range(70)]
    summary = {"ExecutionTime": time.time(), "ExecutionType": "Command"}
    ssm.put_compliance_items(ResourceId=node, ResourceType="ManagedInstance", ComplianceType="Custom:Sec",
                             ExecutionSummary=summary, Items=items)
    got, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        r = ssm.list_compliance_items(ResourceIds=[node], ResourceTypes=["ManagedInstance"],
                                      Filters=[{"Key": "ComplianceType", "Values": ["Custom:Sec"], "Type": "EQUAL"}], **kw)
        assert len(r["ComplianceItems"]) <= 50
        got += r["ComplianceItems"]
        token = r.get("NextToken")
        if not token:
            break
    assert len(got) == 70
    ssm.put_compliance_items(ResourceId=node, ResourceType="ManagedInstance", ComplianceType="Custom:Sec",
                             ExecutionSummary=summary, UploadType="PARTIAL",
                             Items=[{"Id": "c0", "Severity": "HIGH", "Status": "COMPLIANT"}])
    r = ssm.list_compliance_items(ResourceIds=[node], Filters=[
        {"Key": "ComplianceType", "Values": ["Custom:Sec"]}, {"Key": "Status", "Values": ["NON_COMPLIANT"]}])
    assert len(r["ComplianceItems"]) == 34
    ssm.put_compliance_items(ResourceId=node, ResourceType="ManagedInstance", ComplianceType="Custom:Sec",
                             ExecutionSummary=summary, Items=[{"Id": "only", "Severity": "LOW", "Status": "COMPLIANT"}])
    r = ssm.list_compliance_items(ResourceIds=[node], Filters=[{"Key": "ComplianceType", "Values": ["Custom:Sec"]}])
    assert [i["Id"] for i in r["ComplianceItems"]] == ["only"]
    summaries, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        r = ssm.list_resource_compliance_summaries(
            Filters=[{"Key": "ComplianceType", "Values": ["Patch"]}], **kw)
        summaries += r["ResourceComplianceSummaryItems"]
        token = r.get("NextToken")
        if not token:
            break
    assert len(summaries) == 30
    nonc = [s for s in summaries if s["Status"] == "NON_COMPLIANT"]
    assert nonc and all(s["NonCompliantSummary"]["NonCompliantCount"] > 0 for s in nonc)
    per_type = {s["ComplianceType"]: s for s in ssm.list_compliance_summaries()["ComplianceSummaryItems"]}
    assert per_type["Patch"]["NonCompliantSummary"]["NonCompliantCount"] == len(nonc)
    with pytest.raises(ClientError) as e:
        ssm.list_compliance_items(Filters=[{"Key": "Bogus", "Values": ["x"]}])
    assert err(e) == "InvalidFilter"
    with pytest.raises(ClientError) as e:
        ssm.list_compliance_items(NextToken="garbage")
    assert err(e) == "InvalidNextToken"


# --------------------------------------------------------------------------------- inventory
def test_inventory(emulator, tenant):
    ssm = client(emulator, tenant)
    ids = ctl(emulator, "POST", "fleet", {"tenant": tenant, "count": 120, "seed": 3, "windows_fraction": 0.5,
                                          "stopped_fraction": 0.1})["first_ids"]
    entities, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        r = ssm.get_inventory(**kw)
        assert len(r["Entities"]) <= 50
        entities += r["Entities"]
        token = r.get("NextToken")
        if not token:
            break
    assert len(entities) == 120 and all(list(e["Data"]) == ["AWS:InstanceInformation"] for e in entities)
    r = ssm.get_inventory(Filters=[{"Key": "AWS:InstanceInformation.InstanceStatus", "Values": ["Stopped"],
                                    "Type": "Equal"}], ResultAttributes=[{"TypeName": "AWS:Application"}])
    assert r["Entities"] and all(list(e["Data"]) == ["AWS:Application"] for e in r["Entities"])
    content = [{"Name": f"pkg{i}", "Size": str(i)} for i in range(120)]
    ssm.put_inventory(InstanceId=ids[0], Items=[{"TypeName": "Custom:Packages", "SchemaVersion": "1.0",
                                                 "CaptureTime": "2026-01-01T00:00:00Z", "Content": content}])
    rows, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        r = ssm.list_inventory_entries(InstanceId=ids[0], TypeName="Custom:Packages", **kw)
        rows += r["Entries"]
        token = r.get("NextToken")
        if not token:
            break
    assert rows == content
    apps = ssm.list_inventory_entries(InstanceId=ids[0], TypeName="AWS:Application")["Entries"]
    assert len(apps) >= 4 and "Name" in apps[0]
    schema = {s["TypeName"]: s for s in ssm.get_inventory_schema()["Schemas"]}
    assert {"AWS:Application", "AWS:InstanceInformation", "AWS:PatchSummary", "Custom:Packages"} <= set(schema)
    assert {"Name": "Size", "DataType": "number"} in schema["Custom:Packages"]["Attributes"]
    with pytest.raises(ClientError) as e:
        ssm.put_inventory(InstanceId=ids[0], Items=[{"TypeName": "AWS:Bogus", "SchemaVersion": "1.0",
                                                     "CaptureTime": "2026-01-01T00:00:00Z", "Content": []}])
    assert err(e) == "InvalidTypeNameException"
    with pytest.raises(ClientError) as e:
        ssm.list_inventory_entries(InstanceId="i-0123456789abcdef0", TypeName="AWS:Application")
    assert err(e) == "InvalidInstanceId"


# --------------------------------------------------------------------------------- fleet
def test_fleet_describe_instance_information(emulator, tenant):
    ssm = client(emulator, tenant)
    started = time.perf_counter()
    r = ctl(emulator, "POST", "fleet", {"tenant": tenant, "count": 10000, "seed": 42, "hybrid_fraction": 0.2,
                                        "offline_fraction": 0.1, "stopped_fraction": 0.05,
                                        "noncompliant_fraction": 0.3, "not_applicable_fraction": 0.2,
                                        "tags": {"Environment": ["prod", "dev"], "Patch Group": "web"}})
    print(f"\nseeded {r['fleet_size']} nodes: server {r['seconds']} s, round trip {time.perf_counter() - started:.2f} s")
    assert r["fleet_size"] == 10000
    pages = 0
    total, token = 0, None
    started = time.perf_counter()
    while True:
        kw = {"NextToken": token} if token else {}
        out = ssm.describe_instance_information(MaxResults=50, **kw)
        total += len(out["InstanceInformationList"])
        pages += 1
        token = out.get("NextToken")
        if not token:
            break
    print(f"listed {total} nodes in {pages} pages: {time.perf_counter() - started:.2f} s")
    assert total == 10000   # no terminated nodes seeded (terminated ones are not listed)
    offline = ssm.describe_instance_information(Filters=[{"Key": "PingStatus", "Values": ["ConnectionLost"]},
                                                         {"Key": "tag:Environment", "Values": ["prod"]}])
    assert all(i["PingStatus"] == "ConnectionLost" for i in offline["InstanceInformationList"])
    hybrid = ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "ResourceType", "valueSet": ["ManagedInstance"]}], MaxResults=5)
    assert all(i["InstanceId"].startswith("mi-") and len(i["InstanceId"]) == 20 for i in hybrid["InstanceInformationList"])
    node = r["first_ids"][0]
    ctl(emulator, "POST", "fleet/node", {"tenant": tenant, "instance_id": node, "ping_status": "Inactive"})
    one = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [node]}])
    assert one["InstanceInformationList"][0]["PingStatus"] == "Inactive"
    with pytest.raises(ClientError) as e:
        ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": ["i-0123456789abcdef0"]}])
    assert err(e) == "InvalidInstanceId"
    with pytest.raises(ClientError) as e:
        ssm.describe_instance_information(MaxResults=51)
    assert err(e) == "ValidationException"


def test_fleet_seed_is_deterministic(emulator, tenant):
    a = ctl(emulator, "POST", "fleet", {"tenant": tenant, "count": 5, "seed": 9})["first_ids"]
    b = ctl(emulator, "POST", "fleet", {"tenant": tenant + "B", "count": 5, "seed": 9})["first_ids"]
    assert a == b and all(len(i) == 19 for i in a if i.startswith("i-"))


# --------------------------------------------------------------------------------- automation
def test_automation(emulator, tenant):
    ssm = client(emulator, tenant)
    token = str(uuid.uuid4())
    a = ssm.start_automation_execution(DocumentName="AWS-RestartEC2Instance", ClientToken=token,
                                       Parameters={"InstanceId": ["i-0123456789abcdef0"]})["AutomationExecutionId"]
    assert ssm.start_automation_execution(DocumentName="AWS-RestartEC2Instance", ClientToken=token,
                                          Parameters={"InstanceId": ["i-0123456789abcdef0"]})["AutomationExecutionId"] == a
    with pytest.raises(ClientError) as e:
        ssm.start_automation_execution(DocumentName="AWS-StopEC2Instance", ClientToken=token)
    assert err(e) == "IdempotentParameterMismatch"
    with pytest.raises(ClientError) as e:
        ssm.start_automation_execution(DocumentName="AWS-RestartEC2Instance", ClientToken="z" * 36)
    assert err(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        ssm.start_automation_execution(DocumentName="Acme-Fix")
    assert err(e) == "AutomationDefinitionNotFoundException"
    ctl(emulator, "POST", "documents", {"tenant": tenant, "name": "Acme-Fix"})
    b = ssm.start_automation_execution(DocumentName="Acme-Fix")["AutomationExecutionId"]
    ex = ssm.get_automation_execution(AutomationExecutionId=a)["AutomationExecution"]
    assert ex["AutomationExecutionStatus"] == "InProgress" and ex["DocumentName"] == "AWS-RestartEC2Instance"
    ctl(emulator, "POST", f"automations/{a}", {"tenant": tenant, "status": "Success", "outputs": {"out": "ok"}})
    ex = ssm.get_automation_execution(AutomationExecutionId=a)["AutomationExecution"]
    assert ex["AutomationExecutionStatus"] == "Success" and ex["Outputs"] == {"out": ["ok"]} and ex["ExecutionEndTime"]
    r = ssm.describe_automation_executions(Filters=[{"Key": "DocumentNamePrefix", "Values": ["Acme"]}])
    assert [m["AutomationExecutionId"] for m in r["AutomationExecutionMetadataList"]] == [b]
    for _ in range(99):
        ssm.start_automation_execution(DocumentName="AWS-RestartEC2Instance")
    with pytest.raises(ClientError) as e:
        ssm.start_automation_execution(DocumentName="AWS-RestartEC2Instance")
    assert err(e) == "AutomationExecutionLimitExceededException"
    r = ssm.describe_automation_executions(Filters=[{"Key": "ExecutionStatus", "Values": ["InProgress"]}])
    assert len(r["AutomationExecutionMetadataList"]) == 50 and r["NextToken"]
    with pytest.raises(ClientError) as e:
        ssm.get_automation_execution(AutomationExecutionId=str(uuid.uuid4()))
    assert err(e) == "AutomationExecutionNotFoundException"


# --------------------------------------------------------------------------------- calendar
def test_calendar(emulator, tenant):
    ssm = client(emulator, tenant)
    now = time.time()
    ctl(emulator, "POST", "calendars", {"tenant": tenant, "name": "prod-freeze", "default_state": "OPEN",
                                        "events": [{"start": now - 60, "end": now + 3600}]})
    ctl(emulator, "POST", "calendars", {"tenant": tenant, "name": "always-open"})
    r = ssm.get_calendar_state(CalendarNames=["always-open",
                                              "arn:aws:ssm:us-east-1:123456789012:document/prod-freeze"])
    assert r["State"] == "CLOSED" and r["NextTransitionTime"]
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 7200))
    assert ssm.get_calendar_state(CalendarNames=["prod-freeze"], AtTime=later)["State"] == "OPEN"
    with pytest.raises(ClientError) as e:
        ssm.get_calendar_state(CalendarNames=["nope"])
    assert err(e) == "InvalidDocument"


# --------------------------------------------------------------------------------- associations
def test_associations(emulator, tenant):
    ssm = client(emulator, tenant)
    ids = ctl(emulator, "POST", "fleet", {"tenant": tenant, "count": 10, "seed": 1,
                                          "tags": {"Role": "web"}})["first_ids"]
    d = ssm.create_association(Name="AWS-RunPatchBaseline", Targets=[{"Key": "tag:Role", "Values": ["web"]}],
                               Parameters={"Operation": ["Scan"]}, ScheduleExpression="rate(1 day)",
                               AssociationName="patch-scan")["AssociationDescription"]
    for _ in range(55):
        ssm.create_association(Name="AWS-GatherSoftwareInventory", Targets=[{"Key": "InstanceIds", "Values": ["*"]}])
    ssm.create_association(Name="AWS-UpdateSSMAgent", InstanceId=ids[0])
    listed, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        r = ssm.list_associations(**kw)
        listed += r["Associations"]
        token = r.get("NextToken")
        if not token:
            break
    assert len(listed) == 57
    r = ssm.list_associations(AssociationFilterList=[{"key": "AssociationName", "value": "patch-scan"}])
    assert [a["AssociationId"] for a in r["Associations"]] == [d["AssociationId"]]
    assert len(ssm.list_associations(AssociationFilterList=[{"key": "InstanceId", "value": ids[0]}])["Associations"]) == 1
    ssm.start_associations_once(AssociationIds=[d["AssociationId"]])
    runs = ctl(emulator, "GET", f"state/association-runs?tenant={tenant}")["Runs"]
    assert len(runs) == 1 and len(runs[0]["Targets"]) == 10
    with pytest.raises(ClientError) as e:
        ssm.start_associations_once(AssociationIds=[str(uuid.uuid4())])
    assert err(e) == "InvalidAssociation"
    with pytest.raises(ClientError) as e:
        ssm.create_association(Name="AWS-RunPatchBaseline", InstanceId="i-0123456789abcdef0")
    assert err(e) == "InvalidInstanceId"


# --------------------------------------------------------------------------------- run command
def test_commands_and_patch_effect(emulator, tenant):
    ssm = client(emulator, tenant)
    ctl(emulator, "POST", "fleet", {"tenant": tenant, "count": 40, "seed": 5, "noncompliant_fraction": 1.0})
    nodes = ctl(emulator, "GET", f"fleet?tenant={tenant}")["nodes"]
    online = [n["InstanceId"] for n in nodes if n["PingStatus"] == "Online"]
    ok, failing, offline = online[0], online[1], online[2]
    ctl(emulator, "POST", "fleet/node", {"tenant": tenant, "instance_id": offline, "ping_status": "ConnectionLost"})
    ctl(emulator, "POST", "commands/config", {"tenant": tenant, "fail_instances": [failing]})
    cmd = ssm.send_command(DocumentName="AWS-RunPatchBaseline", InstanceIds=[ok, failing, offline],
                           Parameters={"Operation": ["Install"], "RebootOption": ["NoReboot"]},
                           MaxConcurrency="10", MaxErrors="1", Comment="patch")["Command"]
    assert cmd["Status"] == "Pending" and cmd["TargetCount"] == 3
    cid = cmd["CommandId"]
    inv = {i["InstanceId"]: i for i in ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]}
    assert inv[ok]["Status"] == "Success" and inv[failing]["Status"] == "Failed"
    assert inv[offline]["StatusDetails"] == "Undeliverable"
    assert inv[ok]["CommandPlugins"][0]["Name"] in ("PatchLinux", "PatchWindows")
    got = ssm.get_command_invocation(CommandId=cid, InstanceId=ok)
    assert got["Status"] == "Success" and got["ResponseCode"] == 0
    status = {r["ResourceId"]: r["Status"] for r in ssm.list_resource_compliance_summaries(
        Filters=[{"Key": "ComplianceType", "Values": ["Patch"]}], MaxResults=50)["ResourceComplianceSummaryItems"]}
    assert status[ok] == "COMPLIANT" and status[failing] == "NON_COMPLIANT" and status[offline] == "NON_COMPLIANT"
    listed = ssm.list_commands(CommandId=cid)["Commands"][0]
    assert listed["Status"] == "Failed" and listed["ErrorCount"] == 1 and listed["DeliveryTimedOutCount"] == 1
    tagged = ssm.send_command(DocumentName="AWS-RunShellScript", Targets=[{"Key": "InstanceIds", "Values": ["*"]}],
                              Parameters={"commands": ["true"]})["Command"]
    assert tagged["TargetCount"] == 40
    page = ssm.list_command_invocations(CommandId=tagged["CommandId"], MaxResults=25)
    assert len(page["CommandInvocations"]) == 25 and page["NextToken"]
    with pytest.raises(ClientError) as e:
        ssm.get_command_invocation(CommandId=cid, InstanceId=online[5])
    assert err(e) == "InvocationDoesNotExist"
    with pytest.raises(ClientError) as e:
        ssm.send_command(DocumentName="AWS-RunShellScript", InstanceIds=["i-0123456789abcdef0"])
    assert err(e) == "InvalidInstanceId"
    with pytest.raises(ClientError) as e:
        ssm.send_command(DocumentName="AWS-RunShellScript", InstanceIds=[f"i-{n:017x}" for n in range(51)])
    assert err(e) == "ValidationException"
    assert len(ctl(emulator, "GET", f"state/commands?tenant={tenant}")["Commands"]) == 2


# --------------------------------------------------------------------------------- faults
def test_fault_throttle_and_counters(emulator, tenant):
    ssm = client(emulator, tenant)
    ddb = client(emulator, tenant, "dynamodb")
    s3 = client(emulator, tenant, "s3", config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}))
    ctl(emulator, "POST", "faults", {"rules": [{"operation": "ssm:DescribeOpsItems", "throttle_rate": 1.0,
                                                "tenant": tenant},
                                               {"operation": "dynamodb:*", "throttle_rate": 1.0, "tenant": tenant},
                                               {"operation": "s3:ListBuckets", "throttle_rate": 1.0, "tenant": tenant}]})
    try:
        for call, code in ((ssm.describe_ops_items, "ThrottlingException"), (ddb.list_tables, "ThrottlingException"),
                           (s3.list_buckets, "SlowDown")):
            with pytest.raises(ClientError) as e:
                call()
            assert err(e) == code
        ssm.create_ops_item(Title="a", Description="d", Source="s")   # other operations still work
    finally:
        ctl(emulator, "DELETE", "faults", {"tenant": tenant})
    c = ctl(emulator, "GET", f"counters?tenant={tenant}")["counters"]
    assert c["ssm:DescribeOpsItems"] == {"calls": 1, "ok": 0, "errors": 0, "throttled": 1, "injected_errors": 0}
    assert c["dynamodb:ListTables"]["throttled"] == 1 and c["s3:ListBuckets"]["throttled"] == 1
    assert c["ssm:CreateOpsItem"]["ok"] == 1
    # a standard-mode retrying client recovers from a bounded burst of throttles
    ctl(emulator, "POST", "faults", {"operation": "ssm:GetOpsItem", "throttle_rate": 1.0, "max_hits": 1,
                                     "tenant": tenant})
    retrying = client(emulator, tenant, config=Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    oid = ssm.describe_ops_items()["OpsItemSummaries"][0]["OpsItemId"]
    assert retrying.get_ops_item(OpsItemId=oid)["OpsItem"]["OpsItemId"] == oid
    ctl(emulator, "DELETE", "faults", {"tenant": tenant})


def test_fault_error_seeded_and_latency_is_concurrent(emulator, tenant):
    ssm = client(emulator, tenant)
    ctl(emulator, "POST", "faults", {"operation": "ssm:DescribeInstanceInformation", "error_rate": 0.5, "seed": 1,
                                     "tenant": tenant})
    outcomes = []
    for _ in range(20):
        try:
            ssm.describe_instance_information()
            outcomes.append("ok")
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 500
            outcomes.append("err")
    assert 0 < outcomes.count("err") < 20
    ctl(emulator, "DELETE", "faults", {"tenant": tenant})
    ctl(emulator, "POST", "faults", {"operation": "ssm:DescribeOpsItems", "latency_ms": 800, "tenant": tenant})
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client(emulator, tenant).describe_ops_items(), range(4)))
    elapsed = time.perf_counter() - started
    ctl(emulator, "DELETE", "faults", {"tenant": tenant})
    assert 0.8 <= elapsed < 2.4, elapsed
    c = ctl(emulator, "GET", f"counters?tenant={tenant}")["counters"]
    assert c["ssm:DescribeInstanceInformation"]["injected_errors"] == outcomes.count("err")


def test_reset_tenant(emulator, tenant):
    ssm = client(emulator, tenant)
    ssm.create_ops_item(Title="a", Description="d", Source="s")
    ctl(emulator, "POST", "reset", {"tenant": tenant})
    assert ssm.describe_ops_items()["OpsItemSummaries"] == []


# --- EventBridge TestEventPattern (EventBridge matching semantics) ------------------------------

def test_event_pattern_semantics(emulator):
    emulator_url = emulator
    import boto3
    c = boto3.client("events", endpoint_url=emulator_url, region_name="us-east-1")
    ev = {"id": "1", "account": "123456789012", "source": "aws.securityhub", "time": "2026-01-01T00:00:00Z",
          "region": "us-east-1", "detail-type": "Security Hub Findings - Imported", "resources": [],
          "detail": {"severity": 8.5, "name": "prod-web", "findings": [{"Workflow": {"Status": "NEW"}}, {"Workflow": {"Status": "NOTIFIED"}}]}}

    def m(p):
        return c.test_event_pattern(EventPattern=json.dumps(p), Event=json.dumps(ev))["Result"]

    assert m({"detail": {"findings": {"Workflow": {"Status": ["NEW"]}}}})          # into arrays of objects
    assert not m({"detail": {"findings": {"Workflow": {"Status": ["RESOLVED"]}}}})
    assert m({"detail": {"severity": [{"numeric": [">=", 7, "<", 9]}]}})
    assert not m({"detail": {"severity": [{"numeric": [">=", 9]}]}})
    assert m({"detail": {"name": [{"prefix": "prod-"}]}}) and not m({"detail": {"name": [{"prefix": "dev-"}]}})
    assert m({"detail": {"name": [{"anything-but": ["dev-web"]}]}}) and not m({"detail": {"name": [{"anything-but": "prod-web"}]}})
    assert m({"detail": {"missing": [{"exists": False}]}}) and not m({"detail": {"name": [{"exists": False}]}})
    assert m({"$or": [{"source": ["aws.ec2"]}, {"detail": {"name": ["prod-web"]}}]})
    assert not m({"source": ["aws.securityhub"], "detail-type": ["Other"]})
    with pytest.raises(Exception):
        m({"detail": {"severity": [{"numeric": ["~", 1]}]}})
