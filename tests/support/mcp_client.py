"""Drives whatan's /mcp with the official MCP Python SDK (PyPI `mcp`), as an
agent's MCP client would. Run by tests/api/mcp.rs against a live server.

Environment: WHATAN_MCP_URL, and MCP tokens for three users of one
workspace: WHATAN_OWNER (sandbox account +917000000001), WHATAN_ADMIN
(+917000000002, daily limit 4) and WHATAN_MEMBER (+917000000003,
disconnected). Prints one JSON line of what the Rust side checks further;
any failed expectation exits non-zero with the reason.
"""

import asyncio
import json
import os
import sys
import time

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

URL = os.environ["WHATAN_MCP_URL"]


def connect(token, mode="auto"):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(URL, http_client=http), mode=mode)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def refused(result, code):
    """A refusal: isError, text starting with the Send API code, and the
    error object as structured content."""
    text = result.content[0].text
    expect(result.is_error, f"expected a refusal {code}, got success: {text}")
    expect(text.startswith(f"{code}: "), f"expected text starting {code}: got {text!r}")
    expect(
        result.structured_content["code"] == code,
        f"structured content {result.structured_content} is not {code}",
    )
    return result.structured_content


def ok(result):
    expect(not result.is_error, f"unexpected refusal: {result.content[0].text}")
    return result.structured_content


async def owner_checks(report):
    async with connect(os.environ["WHATAN_OWNER"]) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        expect(
            set(tools) == {"send_message", "get_message_status", "list_senders", "list_recent_messages"},
            f"tools: {sorted(tools)}",
        )
        send_description = tools["send_message"].description
        # The pacing is stated as configured (milliseconds in this test).
        for words in ("real person", "apart", "4 a day per account", "consent"):
            expect(words in send_description, f"send_message description lacks {words!r}")
        expect(tools["send_message"].input_schema["required"] == ["to"], "send_message requires only to")

        # Send, then poll the status to `read` through the sandbox network.
        queued = ok(await client.call_tool(
            "send_message",
            {"to": "+91 79997 09798", "text": "Your order shipped", "idempotencyKey": "order-42"},
        ))
        expect(queued["accepted"] is True and queued["status"] == "queued", f"queued: {queued}")
        expect(queued["normalizedPhone"] == "917999709798", f"normalized: {queued}")
        expect(queued["from"] == "+917000000001", f"personal sender: {queued}")
        attempt = queued["sendAttemptId"]
        deadline = time.monotonic() + 30
        while True:
            status = ok(await client.call_tool("get_message_status", {"sendAttemptId": attempt}))
            if status["status"] == "read":
                break
            expect(status["status"] != "failed", f"the send failed: {status}")
            expect(time.monotonic() < deadline, f"not read in 30 s: {status}")
            await asyncio.sleep(0.05)
        expect(status["messageId"], "a read message has a message id")
        report["read"] = attempt

        # The same key and message: the first result, not a second send.
        again = ok(await client.call_tool(
            "send_message",
            {"to": "+917999709798", "type": "text", "text": "Your order shipped", "idempotencyKey": "order-42"},
        ))
        expect(again["sendAttemptId"] == attempt, f"replay gave another attempt: {again}")
        # The same key with another message.
        refused(await client.call_tool(
            "send_message",
            {"to": "+917999709798", "text": "Something else", "idempotencyKey": "order-42"},
        ), "idempotency_conflict")
        refused(await client.call_tool(
            "send_message", {"to": "+917999709798", "text": "x", "idempotencyKey": "has space"},
        ), "invalid_request")

        # Validation, in the Send API's words.
        bad = refused(await client.call_tool("send_message", {"to": "12345", "text": "hi"}), "invalid_phone_number")
        expect(bad["field"] == "to", f"field: {bad}")
        bad = refused(await client.call_tool("send_message", {"to": "+917999709798"}), "invalid_request")
        expect(bad["field"] == "text", f"field: {bad}")
        refused(await client.call_tool("send_message", {"to": "+917999709798", "type": "video"}), "invalid_request")
        bad = refused(await client.call_tool(
            "send_message",
            {"to": "+917999709798", "type": "image", "image": {"url": "http://127.0.0.1/a.png"}},
        ), "invalid_media_url")
        expect(bad["field"] == "image.url", f"field: {bad}")

        # Sender rules: an owner may pick a workspace number, not a stranger's.
        workspace = ok(await client.call_tool(
            "send_message", {"to": "+917999709798", "text": "From the team line", "from": "+917000000002"},
        ))
        expect(workspace["from"] == "+917000000002", f"workspace sender: {workspace}")
        report["workspace"] = workspace["sendAttemptId"]
        refused(await client.call_tool(
            "send_message", {"to": "+917999709798", "text": "hi", "from": "+917000000099"},
        ), "sender_not_allowed")

        senders = ok(await client.call_tool("list_senders", {}))["senders"]
        expect(len(senders) == 3, f"an owner may send from every workspace account: {senders}")
        own = [s for s in senders if s["personal"]]
        expect(len(own) == 1 and own[0]["phone"] == "+917000000001", f"personal: {senders}")
        expect(own[0]["sentToday"] == 1 and own[0]["dailyLimit"] == 4, f"counts: {own[0]}")
        expect(own[0]["driver"] == "sandbox" and own[0]["status"] == "connected", f"own: {own[0]}")

        recent = ok(await client.call_tool("list_recent_messages", {"limit": 5}))["messages"]
        ids = [m["sendAttemptId"] for m in recent]
        expect(ids == [report["workspace"], attempt], f"newest first: {ids}")
        reads = ok(await client.call_tool("list_recent_messages", {"status": "read"}))["messages"]
        # The workspace send may have been read by now too (20 ms receipts).
        expect(attempt in [m["sendAttemptId"] for m in reads], f"status filter: {reads}")
        expect(all(m["status"] == "read" for m in reads), f"status filter: {reads}")
        queued = ok(await client.call_tool("list_recent_messages", {"status": "queued"}))["messages"]
        expect(attempt not in [m["sendAttemptId"] for m in queued], f"status filter: {queued}")
        refused(await client.call_tool("list_recent_messages", {"limit": 51}), "invalid_request")
        refused(await client.call_tool("list_recent_messages", {"status": "lost"}), "invalid_request")
        refused(await client.call_tool(
            "get_message_status", {"sendAttemptId": "0190c3a4-0000-7000-8000-000000000000"},
        ), "not_found")


async def admin_checks(report):
    async with connect(os.environ["WHATAN_ADMIN"]) as client:
        # The owner's workspace send above used this account: one of four.
        for i in range(3):
            ok(await client.call_tool("send_message", {"to": "+917999709798", "text": f"n{i}"}))
        limited = refused(
            await client.call_tool("send_message", {"to": "+917999709798", "text": "one too many"}),
            "rate_limited",
        )
        expect(limited["retryAfter"] > 0, f"retryAfter: {limited}")
        text = (await client.call_tool("send_message", {"to": "+917999709798", "text": "again"})).content[0].text
        expect(" retry after " in text, f"the refusal says when to retry: {text!r}")


async def member_checks(report):
    async with connect(os.environ["WHATAN_MEMBER"]) as client:
        refused(await client.call_tool(
            "send_message", {"to": "+917999709798", "text": "hi", "from": "+917000000001"},
        ), "sender_selection_forbidden")
        refused(await client.call_tool("send_message", {"to": "+917999709798", "text": "hi"}), "whatsapp_not_connected")
        # The owner's personal send is not the member's to read.
        refused(await client.call_tool("get_message_status", {"sendAttemptId": report["read"]}), "not_found")
        senders = ok(await client.call_tool("list_senders", {}))["senders"]
        expect(
            [(s["phone"], s["personal"], s["status"]) for s in senders] == [("+917000000003", True, "disconnected")],
            f"a member sends only from their own account: {senders}",
        )
        recent = ok(await client.call_tool("list_recent_messages", {}))["messages"]
        expect(recent == [], f"the member has sent nothing: {recent}")


async def handshake_checks(report):
    """Clients of the initialize-handshake era (2025-06-18, 2025-11-25)
    connect too."""
    async with connect(os.environ["WHATAN_OWNER"], mode="legacy") as client:
        expect(len((await client.list_tools()).tools) == 4, "tools over the handshake")
        recent = ok(await client.call_tool("list_recent_messages", {"limit": 1}))["messages"]
        expect([m["sendAttemptId"] for m in recent] == [report["workspace"]], f"recent: {recent}")


async def main():
    report = {}
    await owner_checks(report)
    await handshake_checks(report)
    await admin_checks(report)
    await member_checks(report)
    print(json.dumps(report))


def failed_check(e):
    """The AssertionError inside the SDK's task groups, if that is what failed."""
    if isinstance(e, AssertionError):
        return e
    for inner in getattr(e, "exceptions", ()):
        found = failed_check(inner)
        if found:
            return found
    return None


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException as e:
        check = failed_check(e)
        if check is None:
            raise
        print(f"MCP check failed: {check}", file=sys.stderr)
        sys.exit(1)
