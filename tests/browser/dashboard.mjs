// The dashboard in a real browser (Debian's Chromium, driven by
// playwright-core). Started by tests/api/browser.rs, which runs the server
// and passes what it set up in the environment. Exits non-zero, saying
// which step failed, on the first broken expectation.
//
// BASE          the server's URL (http://127.0.0.1:PORT)
// MIA_LINK      a sign-in link of Mia, a member with no number yet
// OWNER_LINK    a sign-in link of the workspace's owner
// OTHER_ATTEMPT a personal send of another member (Mia must not see it)
// WHATAN_BIN    the whatan binary (sandbox scan); WHATAN_DATABASE_PATH or
//               WHATAN_DATABASE_URL its database, which it reads from the environment
// CHROMIUM      the browser; SCREENSHOTS where to save the pages' pictures

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env("BASE");
const SHOTS = env("SCREENSHOTS");
mkdirSync(SHOTS, { recursive: true });

let step = "start";
const check = (ok, what) => {
  if (!ok) throw new Error(`${step}: ${what}`);
};

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 820 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => failures.push(`script error on ${page.url()}: ${e.message}`));
  // Errors in the console (a CSP violation, say), except the 404 and 403
  // that steps 6 and 7 provoke on purpose.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      failures.push(`console: ${m.text()}`);
    }
  });
  page.on("dialog", (d) => d.accept());

  step = "1. sign in with a login link";
  await page.goto(env("MIA_LINK"));
  await page.getByRole("button", { name: "Continue as Mia" }).click();
  await page.waitForURL(`${BASE}/accounts`);
  await page.getByRole("link", { name: "Link your phone" }).click();

  step = "2. add and link a sandbox phone through the QR page";
  await page.getByLabel("Phone number").fill("+91 70000 00042");
  await page.getByLabel("Connection").selectOption("sandbox");
  await page.getByRole("button", { name: "Add and link" }).click();
  const linkPath = new URL(page.url()).pathname;
  const account = linkPath.split("/")[2];
  check(/^\/accounts\/acc_[0-9a-f]+\/link$/.test(linkPath), `went to ${linkPath}`);
  await page.locator(".qr svg path").waitFor();
  check((await page.locator("#link-state").innerText()).includes("Waiting for the phone"), "no waiting state");
  await page.screenshot({ path: join(SHOTS, "link-phone.png") });
  // The simulated phone scans the code; the page notices by itself.
  const scanned = execFileSync(env("WHATAN_BIN"), ["--json", "sandbox", "scan", account]);
  check(JSON.parse(scanned).status === "connected", `sandbox scan said ${scanned}`);
  await page.getByText("Connected.").waitFor({ timeout: 5000 });

  step = "3. create a token and send with it through the Send API";
  await page.getByRole("link", { name: "Tokens" }).click();
  await page.getByLabel("Kind").selectOption("send");
  await page.getByLabel("Name").fill("n8n workflow");
  await page.getByRole("button", { name: "Create token" }).click();
  const token = (await page.locator("#new-token").innerText()).trim();
  check(token.startsWith("whatan_send_"), `the page showed ${token}`);
  await page.screenshot({ path: join(SHOTS, "tokens.png") });
  const send = await fetch(`${BASE}/api/v1/messages/send`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ to: "+917999709798", type: "text", text: "Hello from the dashboard test" }),
  });
  check(send.status === 202, `send answered ${send.status}`);
  const { sendAttemptId } = await send.json();

  step = "4. watch the message reach read on the Messages page";
  await page.getByRole("link", { name: "Messages" }).click();
  const row = page.locator(`tr[data-attempt="${sendAttemptId}"]`);
  await row.waitFor();
  // No reload: the live part of the page updates by itself.
  await row.locator(".badge.read").waitFor({ timeout: 10000 });
  await page.screenshot({ path: join(SHOTS, "messages.png") });
  await row.getByRole("link").click();
  await page.locator("ol.timeline li.done", { hasText: "Read" }).waitFor();
  await page.screenshot({ path: join(SHOTS, "message-detail.png") });

  step = "6. a member cannot see another member's personal attempts";
  await page.goto(`${BASE}/messages`);
  check(!(await page.content()).includes(env("OTHER_ATTEMPT")), "the other member's attempt is listed");
  const other = await page.goto(`${BASE}/messages/${env("OTHER_ATTEMPT")}`);
  check(other.status() === 404, `the other member's attempt answered ${other.status()}`);

  step = "5. revoke the token and see the API refuse it";
  await page.goto(`${BASE}/tokens`);
  await page.locator("tr", { hasText: "n8n workflow" }).getByRole("button", { name: "Revoke" }).click();
  await page.locator("tr", { hasText: "n8n workflow" }).locator(".badge.revoked").waitFor();
  const refused = await fetch(`${BASE}/api/v1/messages/send`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ to: "+917999709798", type: "text", text: "after revoke" }),
  });
  check(refused.status === 401, `a revoked token answered ${refused.status}`);

  step = "7. a cross-site POST is refused";
  // Another origin (same host, another port) serves a form aimed at the
  // dashboard; the browser sends Mia's cookie with it (same site), and
  // whatan refuses it for its Origin.
  const evil = createServer((_, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<form method="post" action="${BASE}/tokens"><input name="kind" value="send"><input name="csrf" value="guessed"><button>Claim your prize</button></form>`);
  });
  await new Promise((ok) => evil.listen(0, "127.0.0.1", ok));
  await page.goto(`http://127.0.0.1:${evil.address().port}/`);
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${BASE}/tokens` && r.request().method() === "POST"),
    page.getByRole("button", { name: "Claim your prize" }).click(),
  ]);
  evil.close();
  check(answer.status() === 403, `the cross-site POST answered ${answer.status()}`);
  check((await page.content()).includes("refused"), "the refusal page does not say so");
  await page.goto(`${BASE}/tokens`);
  check((await page.locator("tbody tr").count()) === 1, "a token was created by the cross-site POST");

  step = "screenshots of the owner's pages";
  const ownerContext = await browser.newContext({ viewport: { width: 1200, height: 820 } });
  const owner = await ownerContext.newPage();
  owner.on("pageerror", (e) => failures.push(`script error on ${owner.url()}: ${e.message}`));
  await owner.goto(env("OWNER_LINK"));
  await owner.getByRole("button", { name: /^Continue as/ }).click();
  await owner.waitForURL(`${BASE}/accounts`);
  await owner.locator(`article[data-account="${account}"] .badge.connected`).waitFor();
  await owner.screenshot({ path: join(SHOTS, "accounts.png") });
  await owner.goto(`${BASE}/team`);
  await owner.screenshot({ path: join(SHOTS, "team.png") });
  await owner.goto(`${BASE}/webhooks`);
  await owner.locator("section[data-endpoint]").first().waitFor();
  await owner.screenshot({ path: join(SHOTS, "webhooks.png") });
  const phone = await browser.newContext({ viewport: { width: 390, height: 760 }, isMobile: true });
  const small = await phone.newPage();
  await small.goto(env("OWNER_LINK_PHONE"));
  await small.getByRole("button", { name: /^Continue as/ }).click();
  await small.waitForURL(`${BASE}/accounts`);
  await small.screenshot({ path: join(SHOTS, "accounts-phone.png") });

  step = "no script errors";
  check(failures.length === 0, failures.join("; "));
  console.log("dashboard browser test: all steps passed");
} catch (e) {
  console.error(`FAILED at ${step}: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
