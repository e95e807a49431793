"""Which documents exist: built-in AWS-owned names plus documents registered through the control API."""
BUILTIN_PREFIXES = ("AWS-", "AWSSupport-", "AWSConfigRemediation-", "AWSEC2-", "AWSFleetManager-",
                    "AmazonCloudWatch-", "AmazonInspector-", "AWSPremiumSupport-")


def doc_name(name):
    return name.rsplit("/", 1)[-1] if name.startswith("arn:") else name


def exists(t, name, doc_type=None):
    name = doc_name(name)
    if name in t.documents:
        return doc_type is None or t.documents[name].get("DocumentType", doc_type) == doc_type
    return name.startswith(BUILTIN_PREFIXES)


def resolve_targets(t, targets, instance_ids=None):
    """Managed nodes (sorted ids, excluding terminated) matched by Targets; AND across targets."""
    if instance_ids:
        return list(instance_ids)
    result = None
    for target in targets or []:
        key, values = target.get("Key", ""), set(target.get("Values") or [])
        if key == "InstanceIds":
            found = set(t.fleet) if values == {"*"} else {i for i in values if i in t.fleet}
        elif key.startswith("tag:"):
            k = key[4:]
            found = {i for i, n in t.fleet.items() if n["tags"].get(k) in values}
        elif key == "tag-key":
            found = {i for i, n in t.fleet.items() if any(k in values for k in n["tags"])}
        else:
            found = set()
        result = found if result is None else result & found
    return sorted(i for i in (result or ()) if t.fleet[i]["state"] != "terminated")
