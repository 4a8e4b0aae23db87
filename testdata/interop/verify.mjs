// verify.mjs checks webhook signatures with the official `standardwebhooks`
// npm package, so relay's Go tests can prove that receivers written in
// JavaScript accept what relay sends.
//
// Input (stdin): one JSON object per line,
//   {"secret": "whsec_...", "headers": {"webhook-id": ..., "webhook-timestamp": ..., "webhook-signature": ...}, "body": "..."}
// Output (stdout): one JSON object per input line, in order,
//   {"ok": true}  or  {"ok": false, "error": "<message>"}
//
// Blank lines are skipped. The body is a string (the library turns a Buffer
// into a UTF-8 string anyway), and the library checks the timestamp against
// the current clock with its fixed 5 minute tolerance.
//
// Run `npm ci` in this directory first; see signer/interop_test.go.
import { createInterface } from "node:readline";
import { Webhook } from "standardwebhooks";

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });

for await (const line of lines) {
  if (line.trim() === "") {
    continue;
  }
  let result;
  try {
    const { secret, headers, body } = JSON.parse(line);
    const wh = new Webhook(secret);
    // jsonParse: false so a valid signature over a non-JSON body is not
    // reported as a failure by the library's JSON.parse of the payload.
    wh.verify(body, headers, { jsonParse: false });
    result = { ok: true };
  } catch (err) {
    result = { ok: false, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}
