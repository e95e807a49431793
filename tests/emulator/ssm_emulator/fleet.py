"""Emulated managed-node fleet: deterministic seeding, node mutation and (lazy) inventory generation."""
import hashlib
import json
import random
import uuid

from .state import insert_sorted, iso, now

AGENT_VERSIONS = ["3.3.1142.0", "3.3.987.0", "3.2.2303.0"]
LINUX_PLATFORMS = [("Amazon Linux", "2023"), ("Amazon Linux", "2"), ("Ubuntu", "22.04"), ("Red Hat Enterprise Linux", "9.2")]
WINDOWS_PLATFORMS = [("Microsoft Windows Server 2022 Datacenter", "10.0.20348"),
                     ("Microsoft Windows Server 2019 Datacenter", "10.0.17763")]
LINUX_APPS = [("openssl", "3.0.8", "Amazon Linux"), ("curl", "8.3.0", "Amazon Linux"), ("nginx", "1.24.0", "nginx"),
              ("python3", "3.9.16", "Amazon Linux"), ("amazon-ssm-agent", "3.3.1142.0", "Amazon.com"),
              ("kernel", "6.1.61", "Amazon Linux"), ("glibc", "2.34", "Amazon Linux"), ("sudo", "1.9.15", "Amazon Linux")]
WINDOWS_APPS = [("Amazon SSM Agent", "3.3.1142.0", "Amazon Web Services"), ("Google Chrome", "120.0.6099", "Google LLC"),
                ("7-Zip", "23.01", "Igor Pavlov"), ("Microsoft Edge", "120.0.2210", "Microsoft Corporation"),
                ("Notepad++", "8.6", "Notepad++ Team"), ("AWS CLI v2", "2.15.0", "Amazon Web Services")]
SERVICES = [("sshd", "OpenSSH Daemon"), ("amazon-ssm-agent", "Amazon SSM Agent"), ("crond", "Cron"),
            ("chronyd", "NTP client"), ("nginx", "nginx HTTP server")]
WIN_SERVICES = [("AmazonSSMAgent", "Amazon SSM Agent"), ("W32Time", "Windows Time"), ("wuauserv", "Windows Update"),
                ("WinRM", "Windows Remote Management")]
CUSTOM_TYPE = "Custom:AppInfo"
PATCH_CLASSES = ["Security", "Bugfix", "SecurityUpdates", "CriticalUpdates"]


def _hex(rng, n):
    return format(rng.getrandbits(4 * n), f"0{n}x")


def _patch_items(rng, node, noncompliant, not_applicable):
    windows = node["PlatformType"] == "Windows"
    items = []
    n = 4 + rng.randrange(4)
    for k in range(n):
        pid = f"KB{5030000 + rng.randrange(9999)}" if windows else \
            f"{rng.choice(LINUX_APPS)[0]}.x86_64:0:{rng.randrange(1, 9)}.{rng.randrange(20)}-{k}"
        items.append({"Id": pid, "Title": pid, "Severity": rng.choice(["CRITICAL", "HIGH", "MEDIUM", "LOW"]),
                      "Status": "COMPLIANT",
                      "Details": {"PatchState": "Installed", "Classification": rng.choice(PATCH_CLASSES),
                                  "PatchSeverity": rng.choice(["Critical", "Important", "Medium"]),
                                  "InstalledTime": iso(node["_created"] - rng.randrange(86400 * 60))}})
    if not_applicable:
        for k in range(1 + rng.randrange(2)):
            pid = f"KB{5040000 + rng.randrange(9999)}" if windows else f"na-package-{k}.x86_64"
            items.append({"Id": pid, "Title": pid, "Severity": "LOW", "Status": "COMPLIANT",
                          "Details": {"PatchState": "NotApplicable", "Classification": "Bugfix",
                                      "PatchSeverity": "Low", "InstalledTime": ""}})
    if noncompliant:
        for k in range(1 + rng.randrange(3)):
            pid = f"KB{5050000 + rng.randrange(9999)}" if windows else f"missing-package-{k}.x86_64"
            state = "Missing" if k else rng.choice(["Missing", "Missing", "Failed", "InstalledPendingReboot"])
            items.append({"Id": pid, "Title": pid, "Severity": rng.choice(["CRITICAL", "HIGH", "MEDIUM"]),
                          "Status": "NON_COMPLIANT",
                          "Details": {"PatchState": state, "Classification": "SecurityUpdates",
                                      "PatchSeverity": "Critical", "InstalledTime": ""}})
    return items


def make_node(rng, opts, created):
    hybrid = rng.random() < opts.get("hybrid_fraction", 0.0)
    windows = rng.random() < opts.get("windows_fraction", 0.3)
    iid = ("mi-" if hybrid else "i-") + _hex(rng, 17)
    roll = rng.random()
    stopped_f, term_f = opts.get("stopped_fraction", 0.0), opts.get("terminated_fraction", 0.0)
    state = "stopped" if roll < stopped_f else "terminated" if roll < stopped_f + term_f else "running"
    ping = "Online"
    if state != "running":
        ping = "ConnectionLost"
    elif rng.random() < opts.get("offline_fraction", 0.0):
        ping = "ConnectionLost"
    pname, pver = rng.choice(WINDOWS_PLATFORMS if windows else LINUX_PLATFORMS)
    ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    tags = {}
    for key, values in (opts.get("tags") or {}).items():
        tags[key] = rng.choice(values) if isinstance(values, list) else str(values)
    node = {
        "InstanceId": iid, "PingStatus": ping,
        "LastPingDateTime": created - (0 if ping == "Online" else 3600 * (1 + rng.randrange(48))),
        "AgentVersion": rng.choice(AGENT_VERSIONS), "PlatformType": "Windows" if windows else "Linux",
        "PlatformName": pname, "PlatformVersion": pver,
        "ResourceType": "ManagedInstance" if hybrid else "EC2Instance",
        "IPAddress": ip, "ComputerName": (f"WIN-{_hex(rng, 8).upper()}" if windows else
                                          f"ip-{ip.replace('.', '-')}.ec2.internal"),
        "AssociationStatus": "Success" if rng.random() > 0.05 else "Failed",
        "SourceId": iid, "SourceType": "AWS::SSM::ManagedInstance" if hybrid else "AWS::EC2::Instance",
        "tags": tags, "state": state, "_seed": rng.getrandbits(32), "_created": created,
    }
    node["IsLatestVersion"] = node["AgentVersion"] == AGENT_VERSIONS[0]
    if hybrid:
        node["ActivationId"] = str(uuid.UUID(int=rng.getrandbits(128)))
        node["IamRole"] = "SSMServiceRole"
        node["RegistrationDate"] = created - 86400 * 30
        node["Name"] = node["ComputerName"]
    return node


def seed(t, opts):
    """Creates opts['count'] nodes (replacing the fleet unless opts['append']). Returns a summary."""
    rng = random.Random(opts.get("seed", 0))
    count = int(opts.get("count", 10))
    created = float(opts.get("now", now()))
    if not opts.get("append"):
        t.fleet.clear()
        t.fleet_ids = []
        for rid in list(t.compliance):
            if rid.startswith(("i-", "mi-")):
                del t.compliance[rid]
        t.compliance_ids = sorted(t.compliance)
    new_ids = []
    nonc_f, na_f = opts.get("noncompliant_fraction", 0.0), opts.get("not_applicable_fraction", 0.0)
    compliance_types = opts.get("compliance_types", ["Patch", "Association", "Custom:Baseline"])
    for _ in range(count):
        node = make_node(rng, opts, created)
        iid = node["InstanceId"]
        if iid in t.fleet:
            continue
        t.fleet[iid] = node
        new_ids.append(iid)
        noncompliant = rng.random() < nonc_f
        na = rng.random() < na_f
        exec_summary = {"ExecutionTime": created - rng.randrange(86400), "ExecutionId": str(uuid.UUID(int=rng.getrandbits(128))),
                        "ExecutionType": "Command"}
        per_res = t.compliance.setdefault(iid, {})
        if "Patch" in compliance_types:
            items = _patch_items(rng, node, noncompliant, na)
            per_res["Patch"] = {"ResourceType": "ManagedInstance", "ExecutionSummary": exec_summary,
                                "items": {e["Id"]: e for e in items}}
        if "Association" in compliance_types:
            aid = str(uuid.UUID(int=rng.getrandbits(128)))
            ok = node["AssociationStatus"] == "Success"
            per_res["Association"] = {"ResourceType": "ManagedInstance", "ExecutionSummary": exec_summary,
                                      "items": {aid: {"Id": aid, "Title": "AWS-GatherSoftwareInventory",
                                                      "Severity": "UNSPECIFIED",
                                                      "Status": "COMPLIANT" if ok else "NON_COMPLIANT",
                                                      "Details": {"DocumentName": "AWS-GatherSoftwareInventory",
                                                                  "DocumentVersion": "1"}}}}
        for ctype in compliance_types:
            if ctype.startswith("Custom:"):
                bad = rng.random() < nonc_f
                per_res[ctype] = {"ResourceType": "ManagedInstance", "ExecutionSummary": exec_summary,
                                  "items": {"baseline-1": {"Id": "baseline-1", "Title": "Baseline check",
                                                           "Severity": "MEDIUM",
                                                           "Status": "NON_COMPLIANT" if bad else "COMPLIANT",
                                                           "Details": {}}}}
    t.fleet_ids = sorted(t.fleet)
    t.compliance_ids = sorted(t.compliance)
    t.inventory_ids = sorted(set(t.inventory_ids) | set(t.fleet))
    t.compliance_version += 1
    return {"tenant": t.akid, "created": len(new_ids), "fleet_size": len(t.fleet),
            "first_ids": new_ids[:5]}


def add_node(t, node):
    t.fleet[node["InstanceId"]] = node
    insert_sorted(t.fleet_ids, node["InstanceId"])
    insert_sorted(t.inventory_ids, node["InstanceId"])


def public_node(node):
    """InstanceInformation wire record."""
    return {k: v for k, v in node.items() if not k.startswith("_") and k not in ("tags", "state")}


def instance_status(node):
    if node["state"] == "terminated":
        return "Terminated"
    if node["state"] == "stopped":
        return "Stopped"
    return "Active" if node["PingStatus"] == "Online" else node["PingStatus"]


def _hash(content):
    return hashlib.md5(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _item(type_name, content, capture, version="1.0"):
    return {"TypeName": type_name, "SchemaVersion": version, "CaptureTime": iso(capture),
            "ContentHash": _hash(content), "Content": content}


def _static_inventory(node):
    """Inventory types that do not depend on mutable state; generated on first access and cached."""
    cached = node.get("_inv")
    if cached is not None:
        return cached
    rng = random.Random(node["_seed"])
    cap = node["_created"]
    windows = node["PlatformType"] == "Windows"
    apps = rng.sample(WINDOWS_APPS if windows else LINUX_APPS, 4 + rng.randrange(3))
    app_content = [{"Name": n, "Version": v, "Publisher": pub, "ApplicationType": "System Environment",
                    "Architecture": "x86_64", "InstalledTime": iso(cap - rng.randrange(86400 * 300)),
                    "PackageId": f"{n}-{v}", "Release": str(rng.randrange(1, 5)), "Summary": n}
                   for n, v, pub in apps]
    net = [{"Name": "Ethernet" if windows else "eth0", "SubnetMask": "255.255.255.0",
            "Gateway": node["IPAddress"].rsplit(".", 1)[0] + ".1", "DHCPServer": "10.0.0.2", "DNSServer": "10.0.0.2",
            "MacAddress": ":".join(_hex(rng, 2) for _ in range(6)), "IPV4": node["IPAddress"], "IPV6": ""}]
    svc = [{"Name": n, "DisplayName": d, "ServiceType": "Win32OwnProcess" if windows else "systemd",
            "Status": rng.choice(["Running", "Running", "Stopped"]), "StartType": "Automatic",
            "DependentServices": "", "ServicesDependedOn": ""} for n, d in (WIN_SERVICES if windows else SERVICES)]
    files = [{"Name": f, "Size": str(rng.randrange(1000, 9000000)), "Description": "",
              "FileVersion": "1.0", "InstalledDate": iso(cap - 86400 * 10), "ModificationTime": iso(cap - 86400),
              "LastAccessTime": iso(cap - 3600), "ProductName": "", "InstalledDir": d, "ProductLanguage": "",
              "CompanyName": "", "ProductVersion": ""}
             for f, d in ((("app.exe", "C:\\Program Files\\App"), ("agent.dll", "C:\\Windows\\System32"))
                          if windows else (("app.conf", "/etc/app"), ("agent", "/usr/bin")))]
    inv = {"AWS:Application": _item("AWS:Application", app_content, cap),
           "AWS:Network": _item("AWS:Network", net, cap),
           "AWS:Service": _item("AWS:Service", svc, cap),
           "AWS:File": _item("AWS:File", files, cap),
           CUSTOM_TYPE: _item(CUSTOM_TYPE, [{"Owner": rng.choice(["team-a", "team-b", "team-c"]),
                                             "Environment": node["tags"].get("Environment", "prod"),
                                             "CostCenter": str(1000 + rng.randrange(50))}], cap)}
    if windows:
        inv["AWS:WindowsUpdate"] = _item("AWS:WindowsUpdate", [
            {"HotFixId": f"KB{5020000 + rng.randrange(9999)}", "Description": "Security Update",
             "InstalledTime": iso(cap - rng.randrange(86400 * 90)), "InstalledBy": "NT AUTHORITY\\SYSTEM"}
            for _ in range(3)], cap)
    node["_inv"] = inv
    return inv


_PATCH_STATES = ("Installed", "InstalledOther", "InstalledPendingReboot", "InstalledRejected", "NotApplicable",
                 "Missing", "Failed")


def _inv_instance_information(t, node):
    info = {"AgentType": "amazon-ssm-agent", "AgentVersion": node["AgentVersion"],
            "ComputerName": node["ComputerName"], "InstanceId": node["InstanceId"],
            "InstanceStatus": instance_status(node), "IpAddress": node["IPAddress"],
            "PlatformName": node["PlatformName"], "PlatformType": node["PlatformType"],
            "PlatformVersion": node["PlatformVersion"], "ResourceType": node["ResourceType"]}
    return _item("AWS:InstanceInformation", [info], node.get("LastPingDateTime", node["_created"]))


def _inv_tag(t, node):
    return _item("AWS:Tag", [{"Key": k, "Value": v} for k, v in sorted(node["tags"].items())], node["_created"])


def _inv_compliance_item(t, node):
    comp = t.compliance.get(node["InstanceId"], {})
    rows = []
    for ctype in sorted(comp):
        rec = comp[ctype]
        ex = rec["ExecutionSummary"]
        for e in rec["items"].values():
            d = e.get("Details") or {}
            rows.append({"ComplianceType": ctype, "ExecutionId": ex.get("ExecutionId", ""),
                         "ExecutionType": ex.get("ExecutionType", ""), "ExecutionTime": iso(ex["ExecutionTime"]),
                         "Id": e.get("Id", ""), "Title": e.get("Title", ""), "Status": e["Status"],
                         "Severity": e["Severity"], "PatchState": d.get("PatchState", ""),
                         "Classification": d.get("Classification", ""), "DocumentName": d.get("DocumentName", "")})
    return _item("AWS:ComplianceItem", rows, node["_created"])


def _inv_compliance_summary(t, node):
    comp = t.compliance.get(node["InstanceId"], {})
    rows = []
    for ctype in sorted(comp):
        rec = comp[ctype]
        nc = sum(1 for e in rec["items"].values() if e["Status"] == "NON_COMPLIANT")
        rows.append({"ComplianceType": ctype, "Status": "NON_COMPLIANT" if nc else "COMPLIANT",
                     "CompliantCount": str(len(rec["items"]) - nc), "NonCompliantCount": str(nc),
                     "ExecutionTime": iso(rec["ExecutionSummary"]["ExecutionTime"])})
    return _item("AWS:ComplianceSummary", rows, node["_created"])


def _inv_patch_summary(t, node):
    patch = t.compliance.get(node["InstanceId"], {}).get("Patch")
    if not patch:
        return None
    states = {s: 0 for s in _PATCH_STATES}
    for e in patch["items"].values():
        s = (e.get("Details") or {}).get("PatchState", "Installed")
        states[s] = states.get(s, 0) + 1
    ex = patch["ExecutionSummary"]
    return _item("AWS:PatchSummary", [{
        "PatchGroup": node["tags"].get("Patch Group", ""), "BaselineId": "pb-0123456789abcdef0",
        "SnapshotId": ex.get("ExecutionId", ""), "OwnerInformation": "",
        "InstalledCount": str(states["Installed"]), "InstalledOtherCount": str(states["InstalledOther"]),
        "InstalledPendingRebootCount": str(states["InstalledPendingReboot"]),
        "InstalledRejectedCount": str(states["InstalledRejected"]),
        "NotApplicableCount": str(states["NotApplicable"]), "MissingCount": str(states["Missing"]),
        "FailedCount": str(states["Failed"]), "OperationType": patch.get("_operation", "Scan"),
        "OperationStartTime": iso(ex["ExecutionTime"]), "OperationEndTime": iso(ex["ExecutionTime"]),
        "RebootOption": "RebootIfNeeded"}], node["_created"])


DYNAMIC_TYPES = {"AWS:InstanceInformation": _inv_instance_information, "AWS:Tag": _inv_tag,
                 "AWS:ComplianceItem": _inv_compliance_item, "AWS:ComplianceSummary": _inv_compliance_summary,
                 "AWS:PatchSummary": _inv_patch_summary}


def node_inventory(t, iid, only=None):
    """Inventory of one node as {type: item}: generated data overlaid with PutInventory data.
    With `only`, computes just that type (cheap path used by GetInventory)."""
    node = t.fleet.get(iid)
    explicit = t.inventory.get(iid, {})
    if only is not None:
        if only in explicit:
            return {only: explicit[only]}
        if node is None:
            return {}
        if only in DYNAMIC_TYPES:
            item = DYNAMIC_TYPES[only](t, node)
            return {only: item} if item else {}
        item = _static_inventory(node).get(only)
        return {only: item} if item else {}
    inv = {}
    if node is not None:
        inv.update(_static_inventory(node))
        for name, fn in DYNAMIC_TYPES.items():
            item = fn(t, node)
            if item:
                inv[name] = item
    inv.update(explicit)
    return inv


def apply_patch_install(t, iid, success, when, command_id):
    """Effect of a completed AWS-RunPatchBaseline Install: the node's Patch items become COMPLIANT."""
    rec = t.compliance.get(iid, {}).get("Patch")
    if rec is None:
        return
    rec["ExecutionSummary"] = {"ExecutionTime": when, "ExecutionId": command_id, "ExecutionType": "Command"}
    rec["_operation"] = "Install"
    if success:
        for e in rec["items"].values():
            if e["Status"] == "NON_COMPLIANT":
                e["Status"] = "COMPLIANT"
                e.setdefault("Details", {})["PatchState"] = "Installed"
                e["Details"]["InstalledTime"] = iso(when)
    else:
        for e in rec["items"].values():
            if e["Status"] == "NON_COMPLIANT":
                e.setdefault("Details", {})["PatchState"] = "Failed"
    t.compliance_version += 1
