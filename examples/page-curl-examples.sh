#!/usr/bin/env bash
# The Send API page's own curl examples, unchanged except for the base URL
# and the token, run against a running whatan.
#
#   WHATAN_URL=http://127.0.0.1:8080 WHATAN_TOKEN=whatan_send_... examples/page-curl-examples.sh
#
# The page's workspace-mode examples send from +917000000001, the number of
# the sandbox account that first run creates, so the token must be an owner
# or admin token of that workspace (the first-run token is). The image and
# document examples use https://example.com URLs: whatan resolves them when
# the request arrives, so an air-gapped server needs
# `[media] resolve = { "example.com" = ["..."] }`; their attempts fail later
# with invalid_media_url if the media cannot be fetched.
#
# Prints each response; exits non-zero unless every send got 202 and every
# status read got 200.
set -euo pipefail

BASE="${WHATAN_URL:-http://127.0.0.1:8080}"
TOKEN="${WHATAN_TOKEN:?set WHATAN_TOKEN to a Send API token}"
RUN="${WHATAN_RUN_ID:-$(date +%s)}"
failures=0
ids=()

# send NAME CURL_ARGS...: runs one of the page's examples and checks for 202.
send() {
  local name=$1
  shift
  local out status body
  out=$(curl -sS -w '\n%{http_code}' "$@")
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  echo "$name -> $status $body"
  if [ "$status" != 202 ]; then
    failures=$((failures + 1))
  else
    ids+=("$(printf '%s' "$body" | sed -n 's/.*"sendAttemptId":"\([^"]*\)".*/\1/p')")
  fi
}

# The page's idempotency keys are fixed strings; a run id keeps reruns apart
# (a rerun with the same keys would be answered from the idempotency store).
send "workspace sender message" -X POST "$BASE/api/v1/messages/send" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: attio-workflow-123-$RUN" \
  -d '{
    "from": "+917000000001",
    "to": "+917999709798",
    "type": "text",
    "text": "Following up from Attio."
  }'

send "personal text message" -X POST "$BASE/api/v1/messages/send" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: invoice-123-reminder-$RUN" \
  -d '{
    "to": "+917999709798",
    "type": "text",
    "text": "Your invoice is ready."
  }'

send "image message" -X POST "$BASE/api/v1/messages/send" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: promo-image-456-$RUN" \
  -d '{
    "to": "+917999709798",
    "type": "image",
    "image": {
      "url": "https://example.com/promo.png",
      "caption": "New arrivals are live."
    }
  }'

send "document message" -X POST "$BASE/api/v1/messages/send" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: quote-789-$RUN" \
  -d '{
    "to": "+917999709798",
    "type": "document",
    "document": {
      "url": "https://example.com/quote.pdf",
      "fileName": "quote.pdf",
      "mimetype": "application/pdf",
      "caption": "Attached quote for review."
    }
  }'

# The Node example's request, as curl.
send "node fetch example" -X POST "$BASE/api/v1/messages/send" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: attio-record-1001-$RUN" \
  -d '{"from":"+917000000001","to":"+917999709798","type":"text","text":"Thanks for contacting support. We are checking this now."}'

for id in "${ids[@]}"; do
  out=$(curl -sS -w '\n%{http_code}' "$BASE/api/v1/messages/$id" \
    -H "Authorization: Bearer $TOKEN")
  status=${out##*$'\n'}
  echo "status $id -> $status ${out%$'\n'*}"
  [ "$status" = 200 ] || failures=$((failures + 1))
done

if [ "$failures" -ne 0 ]; then
  echo "$failures request(s) did not get the expected status" >&2
  exit 1
fi
echo "all ${#ids[@]} page examples queued"
