"""Baseline for `cargo xtask bench`: a Python 3.11 + boto3 Lambda handler that builds the same
AWS clients the Rust functions build, speaking the same Runtime API. Its handler only parses the
event, so its per-event figures are a floor for any real Python implementation."""
import json
import os
import urllib.request

import boto3

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
SESSION = boto3.session.Session()
CLIENTS = {name: SESSION.client(name) for name in ("ssm", "dynamodb", "events", "sns", "s3")}


def handler(event):
    detail = event.get("detail") or {}
    return {"kind": event.get("detail-type"), "keys": sorted(detail) if isinstance(detail, dict) else []}


while True:
    with urllib.request.urlopen(f"http://{API}/2018-06-01/runtime/invocation/next") as r:
        request_id = r.headers["lambda-runtime-aws-request-id"]
        event = json.loads(r.read())
    body = json.dumps(handler(event)).encode()
    req = urllib.request.Request(f"http://{API}/2018-06-01/runtime/invocation/{request_id}/response", data=body, method="POST")
    urllib.request.urlopen(req).read()
