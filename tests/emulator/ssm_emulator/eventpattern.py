"""EventBridge TestEventPattern (moto stubs it out), with EventBridge's matching semantics.

moto's rule engine cannot match into arrays of objects (e.g. Security Hub's documented
`{"detail": {"findings": {"Workflow": {"Status": ["NEW"]}}}}`), so this is a matcher of its own:
- an event field reached through arrays yields every value found (arrays match if any element does);
- a pattern leaf is a list of alternatives: literals (string/number/bool/null) or content filters
  `prefix`, `suffix`, `equals-ignore-case`, `anything-but` (value, list, or {prefix|suffix}),
  `numeric` (comparison pairs), `exists`, `wildcard`, and `$or` at any object level;
- every key of a pattern object must match (AND); numbers compare numerically.
"""
import fnmatch
import json
import re

from .awsproto import json_error, json_response

_MISSING = object()


def _values(node, path):
    """All values at `path` below `node`, descending through arrays."""
    if not path:
        if isinstance(node, list):
            out = []
            for item in node:
                out.extend(_values(item, path))
            return out
        return [node]
    if isinstance(node, list):
        out = []
        for item in node:
            out.extend(_values(item, path))
        return out
    if isinstance(node, dict) and path[0] in node:
        return _values(node[path[0]], path[1:])
    return []


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric(ops, value):
    if not _num(value):
        return False
    i = 0
    while i + 1 < len(ops):
        op, bound = ops[i], ops[i + 1]
        if not _num(bound):
            raise ValueError("numeric bound must be a number")
        ok = {"<": value < bound, "<=": value <= bound, "=": value == bound, ">": value > bound, ">=": value >= bound}.get(op)
        if ok is None:
            raise ValueError(f"unknown numeric operator {op}")
        if not ok:
            return False
        i += 2
    return True


def _leaf_matches(alt, values, present):
    if isinstance(alt, dict):
        if len(alt) != 1:
            raise ValueError("a content filter has exactly one key")
        (op, arg), = alt.items()
        if op == "exists":
            return bool(arg) == present
        strings = [v for v in values if isinstance(v, str)]
        if op == "prefix":
            if isinstance(arg, dict) and "equals-ignore-case" in arg:
                return any(s.lower().startswith(arg["equals-ignore-case"].lower()) for s in strings)
            return any(s.startswith(arg) for s in strings)
        if op == "suffix":
            if isinstance(arg, dict) and "equals-ignore-case" in arg:
                return any(s.lower().endswith(arg["equals-ignore-case"].lower()) for s in strings)
            return any(s.endswith(arg) for s in strings)
        if op == "equals-ignore-case":
            return any(s.lower() == arg.lower() for s in strings)
        if op == "wildcard":
            return any(fnmatch.fnmatchcase(s, arg) for s in strings)
        if op == "numeric":
            return any(_numeric(arg, v) for v in values)
        if op == "anything-but":
            if not present:
                return False
            if isinstance(arg, dict):
                (sub, sarg), = arg.items()
                if sub == "prefix":
                    return any(not (isinstance(v, str) and v.startswith(sarg)) for v in values)
                if sub == "suffix":
                    return any(not (isinstance(v, str) and v.endswith(sarg)) for v in values)
                if sub == "equals-ignore-case":
                    opts = [sarg] if isinstance(sarg, str) else sarg
                    return any(not (isinstance(v, str) and v.lower() in [o.lower() for o in opts]) for v in values)
                raise ValueError(f"unknown anything-but filter {sub}")
            opts = arg if isinstance(arg, list) else [arg]
            return any(v not in opts for v in values)
        if op == "cidr":
            raise ValueError("cidr is not supported by this emulator")
        raise ValueError(f"unknown content filter {op}")
    if alt is None:
        return None in values
    return any(v == alt and type(v) is type(alt) or (_num(v) and _num(alt) and v == alt) for v in values)


def matches(pattern, event, path=()):
    if not isinstance(pattern, dict):
        raise ValueError("pattern must be a JSON object")
    for key, sub in pattern.items():
        if key == "$or":
            if not isinstance(sub, list) or not sub:
                raise ValueError("$or takes a non-empty list")
            if not any(matches(p, event, path) for p in sub):
                return False
            continue
        here = path + (key,)
        if isinstance(sub, dict):
            if not matches(sub, event, here):
                return False
        elif isinstance(sub, list):
            values = _values(event, list(here))
            present = bool(values) or _present(event, list(here))
            if not any(_leaf_matches(alt, values, present) for alt in sub):
                return False
        else:
            raise ValueError(f"pattern value for {key!r} must be an object or an array")
    return True


def _present(node, path):
    if not path:
        return True
    if isinstance(node, list):
        return any(_present(i, path) for i in node)
    return isinstance(node, dict) and path[0] in node and _present(node[path[0]], path[1:])


def test_event_pattern(body):
    try:
        params = json.loads(body or b"{}")
        pattern = json.loads(params["EventPattern"])
        event = json.loads(params["Event"])
    except (ValueError, KeyError, TypeError):
        return json_error("ValidationException", "EventPattern and Event must be JSON", 400)
    if not isinstance(event, dict):
        return json_error("ValidationException", "Parameter Event is not valid", 400)
    for field in ("id", "account", "source", "time", "region", "detail-type"):
        if field not in event:
            return json_error("ValidationException", f"Parameter Event is not valid: missing {field}", 400)
    try:
        result = matches(pattern, event)
    except (ValueError, TypeError) as e:
        return json_error("InvalidEventPatternException", f"Event pattern is not valid: {e}", 400)
    return json_response({"Result": bool(result)})
