"""Request validation against botocore's SSM service model (plus the constraints ParamValidator skips)."""
import re
import threading

from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

from .awsproto import ApiError

_lock = threading.Lock()
_model = None
_pattern_cache = {}


def model():
    global _model
    with _lock:
        if _model is None:
            _model = ServiceModel(Loader().load_service_model("ssm", "service-2"), "ssm")
        return _model


def _compiled(pattern):
    if pattern not in _pattern_cache:
        try:
            _pattern_cache[pattern] = re.compile(pattern, re.S)
        except re.error:
            _pattern_cache[pattern] = None
    return _pattern_cache[pattern]


def _extra(shape, value, path, errors):
    """Checks max lengths, enums, numeric max and patterns; recurses into structures/lists/maps."""
    t = shape.type_name
    meta = shape.metadata
    if value is None:
        return
    if t == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _extra(member, value[name], f"{path}.{name}", errors)
    elif t == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must have length less than "
                          f"or equal to {meta['max']}")
        for i, v in enumerate(value):
            _extra(shape.member, v, f"{path}[{i}]", errors)
    elif t == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value at '{path}' failed to satisfy constraint: Map must have at most {meta['max']} entries")
        for k, v in value.items():
            _extra(shape.key, k, f"{path}.key", errors)
            _extra(shape.value, v, f"{path}.{k}", errors)
    elif t == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must have length less than "
                          f"or equal to {meta['max']}")
        if shape.enum and value not in shape.enum:
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy enum "
                          f"value set: [{', '.join(shape.enum)}]")
        pat = meta.get("pattern")
        if pat:
            rx = _compiled(pat)
            if rx is not None and not (rx.fullmatch(value) if pat.startswith("^") or pat.endswith("$")
                                       else rx.fullmatch(value)):
                errors.append(f"Value '{value[:200]}' at '{path}' failed to satisfy constraint: Member must "
                              f"satisfy regular expression pattern: {pat}")
    elif t in ("integer", "long", "float", "double") and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        if "max" in meta and value > meta["max"]:
            errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have value "
                          f"less than or equal to {meta['max']}")


def validate(operation, params, error_code="ValidationException"):
    """Raises ApiError(error_code) when params do not satisfy the operation's input shape."""
    op = model().operation_model(operation)
    shape = op.input_shape
    if not isinstance(params, dict):
        raise ApiError("SerializationException", "Request body must be a JSON object")
    report = ParamValidator().validate(params, shape)
    errors = []
    if report.has_errors():
        errors.append(report.generate_report().replace("\n", " "))
    _extra(shape, params, shape.name, errors)
    if errors:
        n = len(errors)
        raise ApiError(error_code, f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(errors))
