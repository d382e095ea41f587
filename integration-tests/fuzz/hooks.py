"""schemathesis hooks for integration-tests/api-fuzz.sh, applied before each request.

- `freeipa.ca_pem` must be a CA certificate, which no JSON Schema can say: a generated string
  there is replaced by the PEM of a real CA (the 389-ds fixture's, in $API_FUZZ_CA_PEM), so the
  requests reach the rules behind it (the password a new destination needs, the directory check).
- `freeipa.server`: a generated host would make pangeod's directory check look it up and
  connect to it. The tests send nothing beyond this machine, so a generated string there is
  replaced by a loopback port where nothing listens (the check then fails at once, with 409).
Everything else is sent as generated.
"""
import os

import schemathesis

CA_PEM = open(os.environ["API_FUZZ_CA_PEM"], encoding="ascii").read()
NOWHERE = "127.0.0.1:9"


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    freeipa = body.get("freeipa") if isinstance(body, dict) else None
    if not isinstance(freeipa, dict):
        return
    if isinstance(freeipa.get("ca_pem"), str):
        freeipa["ca_pem"] = CA_PEM
    if isinstance(freeipa.get("server"), str):
        freeipa["server"] = NOWHERE
