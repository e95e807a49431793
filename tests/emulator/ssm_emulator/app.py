"""WSGI middleware in front of moto's server app: control API, counters, fault injection, emulated SSM."""
import contextlib
import io
import json
import logging
import sys
import threading
import time
import traceback

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from .eventpattern import test_event_pattern
from . import control
from .awsproto import (ApiError, json_error, json_response, operation_name, parse_credential,
                       server_error_response, status_line, throttle_response)
from .faults import COUNTERS, FAULTS
from .ssm import HANDLERS
from .state import STORE
from .validation import validate

log = logging.getLogger("emulator")


class Context:
    def __init__(self, tenant, region, akid):
        self.tenant = tenant
        self.region = region
        self.akid = akid


def _read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated") or environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


_ASSUMED = {}
_DYNAMODB_LOCK = threading.Lock()


def assumed_role_tenant(akid, region):
    """Tenant of a request. Temporary keys that moto's STS AssumeRole minted (`ASIA…`) map to
    `<RoleArn>@<region>`, so a test can seed the fleet a role's sessions will see in a region
    before any session exists (each AssumeRole call mints a new random key)."""
    if not akid.startswith("ASIA"):
        return akid
    role = _ASSUMED.get(akid)
    if role is None:
        from moto.sts.models import sts_backends
        for by_partition in list(sts_backends.values()):
            for backend in list(by_partition.values()):
                found = backend.get_assumed_role_from_access_key(akid)
                if found is not None:
                    role = _ASSUMED[akid] = found.role_arn
                    break
            if role is not None:
                break
    return f"{role}@{region}" if role else akid


class EmulatorApp:
    def __init__(self):
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_emulator/"):
            status, headers, data = control.handle(environ, _read_body(environ))
            start_response(status_line(status), headers)
            return [data]
        body = _read_body(environ)
        akid, region, service = parse_credential(environ, environ.get("QUERY_STRING", ""))
        akid = assumed_role_tenant(akid, region)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if service is None and target.startswith("AmazonSSM."):
            service = "ssm"
        operation, protocol = operation_name(environ, body, service)

        latency, outcome = FAULTS.decide(akid, operation)
        if latency:
            time.sleep(latency / 1000.0)
        if outcome == "throttle":
            COUNTERS.record(akid, operation, "throttled")
            status, headers, data = throttle_response(service, protocol)
            start_response(status_line(status), headers + [("Content-Length", str(len(data)))])
            return [data]
        if outcome == "error":
            COUNTERS.record(akid, operation, "injected_errors")
            status, headers, data = server_error_response(service, protocol)
            start_response(status_line(status), headers + [("Content-Length", str(len(data)))])
            return [data]

        if target == "AWSEvents.TestEventPattern":
            status, headers, data = test_event_pattern(body)
            COUNTERS.record(akid, operation, "ok" if status < 400 else "errors")
            start_response(status_line(status), headers)
            return [data]

        ssm_op = target[len("AmazonSSM."):] if target.startswith("AmazonSSM.") else None
        if ssm_op in HANDLERS:
            status, headers, data = self.handle_ssm(ssm_op, akid, region, body)
            COUNTERS.record(akid, operation, "ok" if status < 400 else "errors")
            start_response(status_line(status), headers)
            return [data]

        captured = {}

        def _start_response(status, headers, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        # DynamoDB applies each write, condition included, atomically; moto under a threaded
        # server does not: concurrent UpdateItems of one item raised "dictionary changed size
        # during iteration" (an HTML 500). One DynamoDB request at a time, as moto assumes.
        with _DYNAMODB_LOCK if service == "dynamodb" else contextlib.nullcontext():
            result = self.moto(environ, _start_response)
            try:
                chunks = list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        COUNTERS.record(akid, operation, "ok" if captured.get("status", 500) < 400 else "errors")
        return chunks

    def handle_ssm(self, op, akid, region, body):
        fn, param_error = HANDLERS[op]
        try:
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise ApiError("SerializationException", "Request body is not valid JSON")
            validate(op, params, param_error)
            tenant = STORE.get(akid, region)
            with tenant.lock:
                out = fn(Context(tenant, region, akid), params)
            return json_response(out or {})
        except ApiError as e:
            return json_error(e.code, e.message, e.status, e.extra)
        except Exception as e:  # noqa: BLE001 - a server fault, reported as AWS does
            traceback.print_exc(file=sys.stderr)
            return json_error("InternalServerError", f"{type(e).__name__}: {e}", 500)
