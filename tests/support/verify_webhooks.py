"""Verifies whatan's webhook deliveries with the official Standard Webhooks
library (PyPI `standardwebhooks`), not with whatan's own code.

stdin: a JSON array of {"secret", "headers", "body", "expect": "valid" |
"invalid"}. Exits non-zero, naming the case, if any verdict differs.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

cases = json.load(sys.stdin)
for i, case in enumerate(cases):
    try:
        Webhook(case["secret"]).verify(case["body"].encode(), case["headers"])
        verdict = "valid"
    except WebhookVerificationError as e:
        verdict = "invalid"
        reason = str(e)
    if verdict != case["expect"]:
        print(f"case {i}: expected {case['expect']}, got {verdict}: {case['headers']}", file=sys.stderr)
        sys.exit(1)
print(json.dumps({"verified": len(cases)}))
