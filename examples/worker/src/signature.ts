/**
 * Standard Webhooks verification, as Replicate signs: HMAC-SHA256 over `${id}.${timestamp}.${body}` with the
 * key in `whsec_<base64>`, sent as `webhook-signature: v1,<base64> [v1,<base64> …]`.
 */

/** Deliveries whose timestamp is further than this from the Worker's clock are refused (replays). */
export const TOLERANCE_SECONDS = 5 * 60;

/** A request that does not carry a valid signature: answered 401 with `message`. */
export class SignatureError extends Error {}

/** Import the signing key from Replicate's secret; throws (a configuration error, not the client's) if malformed. */
export async function importSecret(secret: string): Promise<CryptoKey> {
  if (!secret.startsWith("whsec_")) throw new Error("WEBHOOK_SECRET must look like whsec_<base64>");
  const key = decodeBase64(secret.slice("whsec_".length));
  if (!key || key.length === 0) throw new Error("WEBHOOK_SECRET has no valid base64 key after whsec_");
  return crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
}

/** Check the three signature headers against `body`; throws SignatureError saying what is wrong. */
export async function verifySignature(
  key: CryptoKey,
  headers: Headers,
  body: string,
  nowSeconds = Date.now() / 1000,
): Promise<void> {
  const id = headers.get("webhook-id");
  const timestamp = headers.get("webhook-timestamp");
  const signatures = headers.get("webhook-signature");
  if (!id || !timestamp || !signatures) {
    throw new SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header");
  }
  if (!/^\d+$/.test(timestamp)) throw new SignatureError("webhook-timestamp is not a unix time in seconds");
  if (Math.abs(nowSeconds - Number(timestamp)) > TOLERANCE_SECONDS) {
    throw new SignatureError(`webhook-timestamp is more than ${TOLERANCE_SECONDS} s away from now`);
  }
  const signed = new TextEncoder().encode(`${id}.${timestamp}.${body}`);
  for (const entry of signatures.split(" ")) {
    const [version, encoded] = entry.split(",", 2);
    const signature = version === "v1" && encoded ? decodeBase64(encoded) : null;
    if (signature && (await crypto.subtle.verify("HMAC", key, signature, signed))) return; // constant time
  }
  throw new SignatureError("no valid v1 signature in webhook-signature");
}

function decodeBase64(text: string): Uint8Array | null {
  try {
    return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  } catch {
    return null;
  }
}
