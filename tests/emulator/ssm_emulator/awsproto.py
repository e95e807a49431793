"""Wire-protocol helpers: credentials/tenant parsing, operation naming, error bodies."""
import json
import re
from urllib.parse import parse_qs

ACCOUNT_ID = "123456789012"
_CRED_RE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")


class ApiError(Exception):
    """An AWS error returned as awsJson1_1: HTTP status + __type + Message (+ extra fields)."""

    def __init__(self, code, message, status=400, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra


def parse_credential(environ, query_string=""):
    """Returns (access_key_id, region, service) from the SigV4 Authorization header or presigned query."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = _CRED_RE.search(auth)
    if not m and "X-Amz-Credential" in query_string:
        cred = parse_qs(query_string).get("X-Amz-Credential", [""])[0]
        m = _CRED_RE.search("Credential=" + cred)
    if not m:
        return "anonymous", "us-east-1", None
    return m.group(1), m.group(3), m.group(4)


def json_response(body, status=200, headers=None):
    data = json.dumps(body, separators=(",", ":")).encode()
    h = [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))]
    if headers:
        h.extend(headers)
    return status, h, data


def json_error(code, message, status=400, extra=None, type_prefix=""):
    body = {"__type": type_prefix + code, "Message": message}
    if extra:
        body.update(extra)
    return json_response(body, status, [("x-amzn-ErrorType", code)])


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error", 503: "Slow Down"}


def status_line(status):
    return f"{status} {_REASONS.get(status, 'Status')}"


# ---------------------------------------------------------------- operation naming
_S3_SUBRESOURCES = {"acl", "tagging", "uploads", "uploadId", "versioning", "policy", "lifecycle", "cors",
                    "website", "notification", "encryption", "location", "versions", "replication",
                    "object-lock", "retention", "legal-hold", "attributes", "partNumber", "publicAccessBlock",
                    "ownershipControls", "logging", "accelerate", "requestPayment", "inventory", "metrics",
                    "analytics", "intelligent-tiering", "restore", "select"}


def s3_operation(method, path, query, host, headers_copy_source):
    q = parse_qs(query, keep_blank_values=True)
    parts = [p for p in path.split("/") if p]
    hostname = (host or "").split(":")[0]
    virtual = hostname and not re.match(r"^(\d+\.){3}\d+$", hostname) and hostname not in ("localhost",) \
        and not hostname.startswith("s3.") and "." in hostname
    if virtual:
        parts = [hostname.split(".")[0]] + parts
    has_key = len(parts) > 1
    if not parts:
        return "ListBuckets" if method == "GET" else "Other"
    if "delete" in q and method == "POST":
        return "DeleteObjects"
    if set(q) & _S3_SUBRESOURCES:
        return "Other"
    if has_key:
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject",
                "PUT": "CopyObject" if headers_copy_source else "PutObject"}.get(method, "Other")
    if method == "GET":
        return "ListObjectsV2" if q.get("list-type") == ["2"] else "ListObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(method, "Other")


def operation_name(environ, body, service):
    """`<service>:<Operation>` for counting and fault matching."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        op = target.rsplit(".", 1)[-1]
        return f"{service or target.split('_')[0].split('.')[0].lower()}:{op}", "json"
    method = environ.get("REQUEST_METHOD", "GET")
    query = environ.get("QUERY_STRING", "")
    ctype = environ.get("CONTENT_TYPE", "")
    if service == "s3" or (service is None and "Action=" not in query and "x-www-form-urlencoded" not in ctype):
        op = s3_operation(method, environ.get("PATH_INFO", "/"), query, environ.get("HTTP_HOST", ""),
                          environ.get("HTTP_X_AMZ_COPY_SOURCE"))
        return f"s3:{op}", "rest-xml"
    action = parse_qs(query).get("Action", [None])[0]
    if not action and "x-www-form-urlencoded" in ctype:
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
    if action:
        return f"{service or 'unknown'}:{action}", "query"
    return f"{service or 'unknown'}:Other", "rest"


# ---------------------------------------------------------------- injected fault bodies
def throttle_response(service, protocol):
    if protocol == "json":
        t = "com.amazonaws.dynamodb.v20120810#ThrottlingException" if service == "dynamodb" else "ThrottlingException"
        data = json.dumps({"__type": t, "message": "Rate exceeded"}).encode()
        return 400, [("Content-Type", "application/x-amz-json-1.0" if service == "dynamodb" else
                      "application/x-amz-json-1.1"), ("x-amzn-ErrorType", "ThrottlingException")], data
    if protocol == "rest-xml":
        data = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message><RequestId>EMULATED</RequestId></Error>")
        return 503, [("Content-Type", "application/xml")], data
    data = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
            b"</Error><RequestId>EMULATED</RequestId></ErrorResponse>")
    return 400, [("Content-Type", "text/xml")], data


def server_error_response(service, protocol):
    if protocol == "json":
        t = ("com.amazonaws.dynamodb.v20120810#InternalServerError" if service == "dynamodb"
             else "InternalServerError")
        data = json.dumps({"__type": t, "message": "Injected internal error"}).encode()
        return 500, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", "InternalServerError")], data
    if protocol == "rest-xml":
        data = b"<Error><Code>InternalError</Code><Message>Injected internal error</Message></Error>"
        return 500, [("Content-Type", "application/xml")], data
    data = (b"<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>"
            b"<Message>Injected internal error</Message></Error><RequestId>EMULATED</RequestId></ErrorResponse>")
    return 500, [("Content-Type", "text/xml")], data
