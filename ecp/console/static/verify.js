// ECP receipt verification, entirely in the browser (WebCrypto SHA-256 and Ed25519).
//
// Mirrors lineage/receipt.py verify_receipt, in the same order:
//   parse receipt -> parse checkpoint note -> origin -> log signature ->
//   checkpoint covers the entry -> leaf hash of the entry -> RFC 9162 inclusion proof.
// Nothing is sent anywhere (the page's CSP forbids connections); values are
// shown with textContent only, never as HTML.
"use strict";

(() => {
  const MEDIA_TYPE = "application/vnd.ecp.receipt.v1+json";
  const MAX_RECEIPT_BYTES = 256 * 1024;
  const FIELDS = ["checkpoint", "entry", "inclusionProof", "leafHash", "logIndex", "mediaType"];
  const SIG_PREFIX = "\u2014 "; // EM DASH, space
  const SPKI_ED25519 = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
  const PIN_KEY = "ecp.console.logKey";

  // The broken step is what an auditor needs first: these are its names.
  const STEP = {
    MALFORMED: "malformed receipt",
    KEY: "unusable log key",
    ORIGIN: "wrong origin",
    SIGNATURE: "bad signature",
    PROOF: "proof mismatch",
    WITNESS: "missing witness cosignatures",
    BROWSER: "browser support",
  };

  class StepError extends Error {
    constructor(step, message) {
      super(message);
      this.step = step;
    }
  }

  const enc = new TextEncoder();

  function b64decodeStrict(text, what, step) {
    if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
      throw new StepError(step, `${what} is not valid base64.`);
    }
    const bin = atob(text);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  // Standard or URL-safe, padded or not, as authority.dsse.b64decode_any.
  function b64decodeAny(text, what) {
    if (typeof text !== "string") throw new StepError(STEP.MALFORMED, `${what} must be a base64 string.`);
    let s = text.trim().replace(/-/g, "+").replace(/_/g, "/");
    s += "=".repeat((4 - (s.length % 4)) % 4);
    return b64decodeStrict(s, what, STEP.MALFORMED);
  }

  function b64encode(bytes) {
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }
  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

  // RFC 8785 for the values a DSSE envelope holds (strings, arrays, objects):
  // JSON.stringify escapes strings exactly as JCS, and the default sort
  // compares UTF-16 code units, which is JCS's key order.
  function canonical(v) {
    if (v === null || typeof v === "boolean" || typeof v === "string") return JSON.stringify(v);
    if (typeof v === "number") {
      if (!Number.isFinite(v)) throw new StepError(STEP.MALFORMED, "entry holds a non-finite number.");
      return JSON.stringify(v);
    }
    if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
  }

  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const isIndex = (v) => Number.isSafeInteger(v) && v >= 0;

  function hash32(value, what) {
    if (typeof value !== "string") throw new StepError(STEP.MALFORMED, `${what} must be a base64 string.`);
    const raw = b64decodeStrict(value, what, STEP.MALFORMED);
    if (raw.length !== 32) throw new StepError(STEP.MALFORMED, `${what} must be 32 bytes, got ${raw.length}.`);
    return raw;
  }

  // The envelope as Envelope.to_dict() would write it (standard base64, keyid
  // always present), so any spelling of the same envelope hashes the same.
  function normaliseEnvelope(doc) {
    if (!isObject(doc)) throw new StepError(STEP.MALFORMED, "entry must be a DSSE envelope object.");
    const extra = Object.keys(doc).filter((k) => !["payload", "payloadType", "signatures"].includes(k));
    if (extra.length) throw new StepError(STEP.MALFORMED, `entry has unknown fields: ${extra.join(", ")}.`);
    if (typeof doc.payloadType !== "string") throw new StepError(STEP.MALFORMED, "entry payloadType must be a string.");
    const payload = b64decodeAny(doc.payload, "entry payload");
    if (!Array.isArray(doc.signatures) || doc.signatures.length === 0) {
      throw new StepError(STEP.MALFORMED, "entry must carry at least one signature.");
    }
    const signatures = doc.signatures.map((s, i) => {
      if (!isObject(s) || typeof s.sig !== "string") {
        throw new StepError(STEP.MALFORMED, `entry signature ${i} must be an object with 'sig'.`);
      }
      const keyid = s.keyid === undefined ? "" : s.keyid;
      if (typeof keyid !== "string") throw new StepError(STEP.MALFORMED, `entry signature ${i} keyid must be a string.`);
      return { keyid, sig: b64encode(b64decodeAny(s.sig, `entry signature ${i}`)) };
    });
    return { payload: b64encode(payload), payloadType: doc.payloadType, signatures, payloadBytes: payload };
  }

  // The first object key that appears twice at one level, or null. Run only
  // on text JSON.parse accepted, so strings and nesting are well-formed. Keys
  // compare decoded ("a" and "\u0061" are the same key), as in Python.
  function duplicateKey(text) {
    const stack = [];
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      if (ch === '"') {
        let j = i + 1;
        while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
        const top = stack[stack.length - 1];
        if (top && top.expectKey) {
          const key = JSON.parse(text.slice(i, j + 1));
          if (top.keys.has(key)) return key;
          top.keys.add(key);
          top.expectKey = false;
        }
        i = j + 1;
        continue;
      }
      if (ch === "{") stack.push({ keys: new Set(), expectKey: true });
      else if (ch === "[") stack.push(null);
      else if (ch === "}" || ch === "]") stack.pop();
      else if (ch === ",") {
        const top = stack[stack.length - 1];
        if (top) top.expectKey = true;
      }
      i++;
    }
    return null;
  }

  // JSON.parse, refusing a repeated key (which JSON.parse would silently
  // resolve to the last value) as authority.canonical.parse_json_strict does.
  function parseJsonStrict(text, what) {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new StepError(STEP.MALFORMED, `${what} is not valid JSON.`);
    }
    const dup = duplicateKey(text);
    if (dup !== null) {
      throw new StepError(STEP.MALFORMED, `${what} is ambiguous: it repeats the key ${JSON.stringify(dup)}.`);
    }
    return doc;
  }

  function parseReceipt(text) {
    if (enc.encode(text).length > MAX_RECEIPT_BYTES) {
      throw new StepError(STEP.MALFORMED, `receipt is larger than ${MAX_RECEIPT_BYTES} bytes.`);
    }
    const doc = parseJsonStrict(text, "receipt");
    if (!isObject(doc)) throw new StepError(STEP.MALFORMED, "receipt must be a JSON object.");
    const keys = Object.keys(doc).sort();
    if (keys.join() !== FIELDS.join()) {
      const missing = FIELDS.filter((f) => !keys.includes(f));
      const unknown = keys.filter((k) => !FIELDS.includes(k));
      throw new StepError(STEP.MALFORMED,
        `receipt fields wrong (missing: ${missing.join(", ") || "none"}; unknown: ${unknown.join(", ") || "none"}).`);
    }
    if (doc.mediaType !== MEDIA_TYPE) throw new StepError(STEP.MALFORMED, `receipt mediaType must be ${MEDIA_TYPE}.`);
    if (!isIndex(doc.logIndex)) throw new StepError(STEP.MALFORMED, "logIndex must be a non-negative integer.");
    const proof = doc.inclusionProof;
    if (!isObject(proof) || Object.keys(proof).sort().join() !== "hashes,treeSize") {
      throw new StepError(STEP.MALFORMED, "inclusionProof must be {treeSize, hashes}.");
    }
    if (!isIndex(proof.treeSize)) throw new StepError(STEP.MALFORMED, "inclusionProof.treeSize must be a non-negative integer.");
    if (!Array.isArray(proof.hashes) || proof.hashes.length > 64) {
      throw new StepError(STEP.MALFORMED, "inclusionProof.hashes must be a list of at most 64.");
    }
    const hashes = proof.hashes.map((h, i) => hash32(h, `inclusionProof.hashes[${i}]`));
    if (typeof doc.checkpoint !== "string") throw new StepError(STEP.MALFORMED, "checkpoint must be a signed note string.");
    const entry = normaliseEnvelope(doc.entry);
    return {
      logIndex: doc.logIndex, leafHash: hash32(doc.leafHash, "leafHash"), entry,
      treeSize: proof.treeSize, hashes, note: doc.checkpoint,
    };
  }

  // C2SP signed note, as lineage.note.parse_note.
  function parseNote(msg) {
    for (const ch of msg) {
      if (ch < " " && ch !== "\n") throw new StepError(STEP.MALFORMED, "checkpoint note contains a control character.");
    }
    const split = msg.lastIndexOf("\n\n");
    if (split < 0) throw new StepError(STEP.MALFORMED, "checkpoint note has no blank line before its signatures.");
    const text = msg.slice(0, split + 1);
    const block = msg.slice(split + 2);
    if (!block || !block.endsWith("\n")) throw new StepError(STEP.MALFORMED, "checkpoint note has no signatures or no final newline.");
    const sigs = [];
    for (const line of block.slice(0, -1).split("\n")) {
      if (!line.startsWith(SIG_PREFIX)) throw new StepError(STEP.MALFORMED, "a line in the checkpoint's signature block is not a signature.");
      const rest = line.slice(SIG_PREFIX.length);
      const sp = rest.indexOf(" ");
      const name = sp < 0 ? rest : rest.slice(0, sp);
      const b64 = sp < 0 ? "" : rest.slice(sp + 1);
      const blob = b64 ? b64decodeStrict(b64, `signature by ${name}`, STEP.MALFORMED) : new Uint8Array();
      if (!validName(name) || blob.length < 5) throw new StepError(STEP.MALFORMED, `malformed checkpoint signature line for ${name}.`);
      if (sigs.length === 100) throw new StepError(STEP.MALFORMED, "checkpoint note has more than 100 signatures.");
      sigs.push({ name, keyId: blob.slice(0, 4), sig: blob.slice(4) });
    }
    return { text, sigs };
  }

  const validName = (name) => name.length > 0 && !name.includes("+") && !/\s/.test(name);

  // C2SP tlog-checkpoint body, as lineage.checkpoint.Checkpoint.parse.
  function parseCheckpoint(text) {
    if (!text.endsWith("\n")) throw new StepError(STEP.MALFORMED, "checkpoint body must end with a newline.");
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3) throw new StepError(STEP.MALFORMED, "checkpoint needs origin, size and root hash lines.");
    const [origin, sizeText, rootText] = lines;
    if (!/^(0|[1-9][0-9]*)$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) {
      throw new StepError(STEP.MALFORMED, `checkpoint size ${JSON.stringify(sizeText)} is not a decimal number.`);
    }
    if (!origin) throw new StepError(STEP.MALFORMED, "checkpoint origin is empty.");
    const root = b64decodeStrict(rootText, "checkpoint root hash", STEP.MALFORMED);
    if (root.length !== 32) throw new StepError(STEP.MALFORMED, "checkpoint root hash must be 32 bytes.");
    if (lines.slice(3).some((l) => !l)) throw new StepError(STEP.MALFORMED, "checkpoint extension lines must be non-empty.");
    return { origin, size: Number(sizeText), root };
  }

  async function noteKeyId(name, raw, type = 0x01) {
    return (await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(type), raw))).slice(0, 4);
  }

  // --- witness cosignatures (C2SP tlog-cosignature/v1, key type 0x04) ---------

  // One verifier key name+hexid+base64(0x04 || key) per line.
  async function parseWitnessKeys(text) {
    const out = [];
    for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const parts = line.split("+");
      if (parts.length < 3) throw new StepError(STEP.KEY, "a witness key must be name+hexid+base64.");
      const name = parts[0];
      const idHex = parts[1];
      if (!validName(name) || !/^[0-9a-fA-F]{8}$/.test(idHex)) throw new StepError(STEP.KEY, "a witness key must be name+hexid+base64.");
      const blob = b64decodeStrict(parts.slice(2).join("+"), "witness key", STEP.KEY);
      if (blob.length !== 33 || blob[0] !== 0x04) throw new StepError(STEP.KEY, `${name} is not a cosignature/v1 witness key.`);
      const raw = blob.slice(1);
      const keyId = await noteKeyId(name, raw, 0x04);
      if (hex(keyId) !== idHex.toLowerCase()) throw new StepError(STEP.KEY, `the witness key id of ${name} does not match its key.`);
      out.push({ name, keyId, raw });
    }
    return out;
  }

  // Count valid cosignatures by the trusted witnesses; a bad one by a trusted
  // witness is a bad signature, not just a missing one.
  async function checkWitnesses(note, witnesses, required, report) {
    const found = [];
    for (const w of witnesses) {
      const sig = note.sigs.find((s) => s.name === w.name && equal(s.keyId, w.keyId));
      if (!sig) continue;
      if (sig.sig.length !== 72) throw new StepError(STEP.SIGNATURE, `the cosignature by ${w.name} is malformed.`);
      const view = new DataView(sig.sig.buffer, sig.sig.byteOffset, 8);
      const ts = view.getBigUint64(0);
      const message = concat(enc.encode(`cosignature/v1\ntime ${ts}\n`), enc.encode(note.text));
      if (!(await ed25519Verify(w.raw, sig.sig.slice(8), message))) {
        throw new StepError(STEP.SIGNATURE, `the cosignature by witness ${w.name} does not verify.`);
      }
      found.push({ name: w.name, time: Number(ts) });
    }
    if (found.length < required) {
      const names = found.map((f) => f.name).join(", ") || "none";
      throw new StepError(STEP.WITNESS, `the checkpoint is cosigned by ${found.length} of the ${witnesses.length} trusted witnesses (${names}); ${required} required. An unwitnessed or forked checkpoint looks like this.`);
    }
    if (witnesses.length) {
      const when = found.map((f) => `${f.name} at ${new Date(f.time * 1000).toISOString()}`).join(", ");
      report("Witness cosignatures", `${found.length} of ${witnesses.length} (${required} required): ${when}`);
    }
  }

  // The auditor's key: PEM SPKI, a note verifier key, or raw base64. Returns
  // the 32 raw bytes and the name a verifier key carries (else null).
  async function parseLogKey(text) {
    const t = text.trim();
    if (!t) throw new StepError(STEP.KEY, "paste the log's public key.");
    if (t.includes("PRIVATE KEY")) {
      throw new StepError(STEP.KEY, "that is a private key: paste the public key (log.pub), and never put a private key into a web page.");
    }
    if (t.startsWith("-----BEGIN PUBLIC KEY-----")) {
      const body = t.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
      const der = b64decodeStrict(body, "PEM key", STEP.KEY);
      if (der.length !== 44 || !equal(der.slice(0, 12), Uint8Array.from(SPKI_ED25519))) {
        throw new StepError(STEP.KEY, "the PEM key is not an Ed25519 public key.");
      }
      return { raw: der.slice(12), name: null };
    }
    const parts = t.split("+");
    if (parts.length >= 3) {
      const name = parts[0];
      const idHex = parts[1];
      const b64 = parts.slice(2).join("+");
      if (!validName(name) || !/^[0-9a-fA-F]{8}$/.test(idHex)) throw new StepError(STEP.KEY, "the verifier key must be name+hexid+base64.");
      const blob = b64decodeStrict(b64, "verifier key", STEP.KEY);
      if (blob.length !== 33 || blob[0] !== 0x01) throw new StepError(STEP.KEY, "the verifier key is not an Ed25519 note key.");
      const raw = blob.slice(1);
      if (hex(await noteKeyId(name, raw)) !== idHex.toLowerCase()) {
        throw new StepError(STEP.KEY, "the verifier key's id does not match its key.");
      }
      return { raw, name };
    }
    const raw = b64decodeStrict(t, "log key", STEP.KEY);
    if (raw.length !== 32) throw new StepError(STEP.KEY, `a raw Ed25519 key is 32 bytes, got ${raw.length}.`);
    return { raw, name: null };
  }

  async function ed25519Verify(raw, sig, message) {
    let key;
    try {
      key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      if (e && e.name === "NotSupportedError") {
        throw new StepError(STEP.BROWSER, "this browser's WebCrypto lacks Ed25519; use a current Chromium, Firefox or Safari.");
      }
      throw new StepError(STEP.KEY, "the log key is not a valid Ed25519 public key.");
    }
    return crypto.subtle.verify({ name: "Ed25519" }, key, sig, message);
  }

  // RFC 9162 section 2.1.3.2, recording each step for the path display.
  async function rootFromInclusion(index, size, leaf, proof) {
    if (index >= size) throw new StepError(STEP.PROOF, `entry ${index} is outside a tree of size ${size}.`);
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    const steps = [];
    for (const p of proof) {
      if (sn === 0) throw new StepError(STEP.PROOF, "the inclusion proof is longer than the tree allows.");
      let side;
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        side = "left";
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) {
            fn = Math.floor(fn / 2);
            sn = Math.floor(sn / 2);
          }
        }
      } else {
        r = await nodeHash(r, p);
        side = "right";
      }
      steps.push({ sibling: p, side, result: r });
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new StepError(STEP.PROOF, "the inclusion proof is too short for the tree size.");
    return { root: r, steps };
  }

  // The whole check. `report(name, ok, detail)` records each step as it passes.
  async function verifyReceipt(receiptText, keyText, expectedOrigin, report, witnessText = "", minText = "") {
    if (!window.crypto || !crypto.subtle) {
      throw new StepError(STEP.BROWSER, "WebCrypto is unavailable: open the console over HTTPS or on localhost.");
    }
    const r = parseReceipt(receiptText);
    const note = parseNote(r.note);
    const cp = parseCheckpoint(note.text);
    report("Receipt and checkpoint are well-formed", `entry ${r.logIndex}, checkpoint of ${cp.origin} at size ${cp.size}`);

    const key = await parseLogKey(keyText);
    const expected = expectedOrigin.trim() || key.name;
    if (expected && cp.origin !== expected) {
      throw new StepError(STEP.ORIGIN, `the checkpoint is for log ${JSON.stringify(cp.origin)}, expected ${JSON.stringify(expected)}.`);
    }
    report("Checkpoint origin", expected ? `${cp.origin} as expected` : `${cp.origin} (no origin was expected)`);

    // The log key's name is the origin (lineage.checkpoint.open_checkpoint).
    const keyName = expected || cp.origin;
    const keyId = await noteKeyId(keyName, key.raw);
    const mine = note.sigs.filter((s) => s.name === keyName && equal(s.keyId, keyId));
    if (mine.length === 0) {
      const names = [...new Set(note.sigs.map((s) => s.name))].join(", ");
      throw new StepError(STEP.SIGNATURE, `the checkpoint carries no signature by this log key (signed by: ${names}).`);
    }
    if (!(await ed25519Verify(key.raw, mine[0].sig, enc.encode(note.text)))) {
      throw new StepError(STEP.SIGNATURE, "the log's Ed25519 signature over the checkpoint does not verify.");
    }
    report("Checkpoint signature", `Ed25519 by ${keyName} (key id ${hex(keyId)})`);

    const witnesses = await parseWitnessKeys(witnessText);
    const min = minText.trim() === "" ? witnesses.length : Number(minText.trim());
    if (!Number.isInteger(min) || min < 0 || min > witnesses.length) {
      throw new StepError(STEP.KEY, `cannot require ${minText.trim()} of ${witnesses.length} trusted witnesses.`);
    }
    await checkWitnesses(note, witnesses, min, report);

    if (cp.size <= r.logIndex) throw new StepError(STEP.PROOF, `checkpoint size ${cp.size} does not cover entry ${r.logIndex}.`);
    if (r.treeSize !== cp.size) {
      throw new StepError(STEP.PROOF, `the inclusion proof is for tree size ${r.treeSize}, the checkpoint is size ${cp.size}.`);
    }
    const envelope = { payload: r.entry.payload, payloadType: r.entry.payloadType, signatures: r.entry.signatures };
    const leaf = await leafHash(enc.encode(canonical(envelope)));
    if (!equal(leaf, r.leafHash)) throw new StepError(STEP.PROOF, "the entry does not hash to the receipt's leafHash.");
    report("Leaf hash", hex(leaf));

    const { root, steps } = await rootFromInclusion(r.logIndex, r.treeSize, leaf, r.hashes);
    if (!equal(root, cp.root)) {
      throw new StepError(STEP.PROOF, "the inclusion proof does not lead to the checkpoint's root hash.");
    }
    report("Inclusion proof", `${steps.length} hash(es) up to root ${hex(root)}`);
    return { receipt: r, checkpoint: cp, leaf, steps };
  }

  // --- consistency between two checkpoints ------------------------------------

  const CONSISTENCY_TYPE = "application/vnd.ecp.consistency.v1+json";
  const CONSISTENCY_FIELDS = ["consistencyProof", "mediaType", "newCheckpoint", "oldCheckpoint"];

  function parseConsistency(text) {
    if (enc.encode(text).length > MAX_RECEIPT_BYTES) {
      throw new StepError(STEP.MALFORMED, `document is larger than ${MAX_RECEIPT_BYTES} bytes.`);
    }
    const doc = parseJsonStrict(text, "consistency document");
    if (!isObject(doc)) throw new StepError(STEP.MALFORMED, "the consistency document must be a JSON object.");
    const keys = Object.keys(doc).sort();
    if (keys.join() !== CONSISTENCY_FIELDS.join()) {
      throw new StepError(STEP.MALFORMED, `the consistency document needs exactly: ${CONSISTENCY_FIELDS.join(", ")}.`);
    }
    if (doc.mediaType !== CONSISTENCY_TYPE) throw new StepError(STEP.MALFORMED, `mediaType must be ${CONSISTENCY_TYPE}.`);
    if (typeof doc.oldCheckpoint !== "string" || typeof doc.newCheckpoint !== "string") {
      throw new StepError(STEP.MALFORMED, "oldCheckpoint and newCheckpoint must be signed note strings.");
    }
    if (!Array.isArray(doc.consistencyProof) || doc.consistencyProof.length > 128) {
      throw new StepError(STEP.MALFORMED, "consistencyProof must be a list of at most 128 hashes.");
    }
    const proof = doc.consistencyProof.map((h, i) => hash32(h, `consistencyProof[${i}]`));
    return { oldNote: doc.oldCheckpoint, newNote: doc.newCheckpoint, proof };
  }

  // Parse a checkpoint note and check the log's signature on it; `which` names it.
  async function openCheckpoint(noteText, key, expected, which) {
    const note = parseNote(noteText);
    const cp = parseCheckpoint(note.text);
    const want = expected || key.name;
    if (want && cp.origin !== want) {
      throw new StepError(STEP.ORIGIN, `the ${which} checkpoint is for log ${JSON.stringify(cp.origin)}, expected ${JSON.stringify(want)}.`);
    }
    const keyName = want || cp.origin;
    const keyId = await noteKeyId(keyName, key.raw);
    const mine = note.sigs.filter((s) => s.name === keyName && equal(s.keyId, keyId));
    if (mine.length === 0) {
      throw new StepError(STEP.SIGNATURE, `the ${which} checkpoint carries no signature by this log key.`);
    }
    if (!(await ed25519Verify(key.raw, mine[0].sig, enc.encode(note.text)))) {
      throw new StepError(STEP.SIGNATURE, `the log's Ed25519 signature over the ${which} checkpoint does not verify.`);
    }
    return cp;
  }

  const isPow2 = (n) => {
    while (n > 1 && n % 2 === 0) n /= 2;
    return n === 1;
  };
  const odd = (n) => n % 2 === 1;
  const half = (n) => Math.floor(n / 2);

  // RFC 9162 section 2.1.4.2, as lineage.merkle.verify_consistency (no 32-bit bit operations).
  async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
    if (oldSize <= 0) throw new StepError(STEP.PROOF, "consistency from an empty tree is meaningless.");
    if (oldSize > newSize) throw new StepError(STEP.PROOF, `the old checkpoint (size ${oldSize}) is larger than the new one (size ${newSize}).`);
    if (oldSize === newSize) {
      if (proof.length) throw new StepError(STEP.PROOF, "the sizes are equal but the consistency proof is not empty.");
      if (!equal(oldRoot, newRoot)) throw new StepError(STEP.PROOF, "equal sizes with different roots: the log forked.");
      return 0;
    }
    if (proof.length === 0) throw new StepError(STEP.PROOF, "the consistency proof is empty.");
    const path = isPow2(oldSize) ? [oldRoot, ...proof] : [...proof];
    let fn = oldSize - 1;
    let sn = newSize - 1;
    while (odd(fn)) {
      fn = half(fn);
      sn = half(sn);
    }
    let fr = path[0];
    let sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) throw new StepError(STEP.PROOF, "the consistency proof is longer than the path between the sizes.");
      if (odd(fn) || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        if (!odd(fn)) {
          while (!(odd(fn) || fn === 0)) {
            fn = half(fn);
            sn = half(sn);
          }
        }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn = half(fn);
      sn = half(sn);
    }
    if (sn !== 0) throw new StepError(STEP.PROOF, "the consistency proof is shorter than the path between the sizes.");
    if (!equal(fr, oldRoot)) throw new StepError(STEP.PROOF, `the consistency proof does not lead to the old checkpoint's root (size ${oldSize}).`);
    if (!equal(sr, newRoot)) throw new StepError(STEP.PROOF, `the consistency proof does not lead to the new checkpoint's root (size ${newSize}).`);
    return proof.length;
  }

  async function checkConsistency(docText, keyText, expectedOrigin, report) {
    if (!window.crypto || !crypto.subtle) {
      throw new StepError(STEP.BROWSER, "WebCrypto is unavailable: open the console over HTTPS or on localhost.");
    }
    const d = parseConsistency(docText);
    const key = await parseLogKey(keyText);
    const expected = expectedOrigin.trim();
    const oldCp = await openCheckpoint(d.oldNote, key, expected, "old");
    report("Old checkpoint signature", `${oldCp.origin} at size ${oldCp.size}, root ${hex(oldCp.root)}`);
    const newCp = await openCheckpoint(d.newNote, key, expected, "new");
    report("New checkpoint signature", `${newCp.origin} at size ${newCp.size}, root ${hex(newCp.root)}`);
    if (oldCp.origin !== newCp.origin) {
      throw new StepError(STEP.ORIGIN, `the checkpoints are of two logs (${oldCp.origin}, ${newCp.origin}).`);
    }
    const n = await verifyConsistency(oldCp.size, newCp.size, oldCp.root, newCp.root, d.proof);
    report("Consistency proof (RFC 9162 §2.1.4.2)", `${n} hash(es): size ${oldCp.size} is a prefix of size ${newCp.size}`);
    return { oldCp, newCp };
  }

  // --- page ------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function addItem(list, text, cls) {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    list.appendChild(li);
    return li;
  }

  function addFact(dl, term, value) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
  }

  function showStatement(payloadBytes) {
    const text = new TextDecoder("utf-8", { fatal: false }).decode(payloadBytes);
    const dl = $("summary");
    dl.replaceChildren();
    let doc = null;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      doc = null;
    }
    $("statement").textContent = doc ? JSON.stringify(doc, null, 2) : text;
    if (isObject(doc)) {
      const pred = isObject(doc.predicate) ? doc.predicate : {};
      addFact(dl, "Statement type", String(doc._type || doc.predicateType || "—"));
      const subjects = Array.isArray(doc.subject) ? doc.subject.map((s) => (isObject(s) ? s.name : "")).filter(Boolean) : [];
      addFact(dl, "Subjects", subjects.join(", ") || "—");
      for (const [k, v] of Object.entries(pred)) {
        if (v === null || typeof v !== "object") addFact(dl, k, String(v));
      }
    }
    $("statement-section").hidden = false;
  }

  function showPath(leaf, steps) {
    const ol = $("path");
    ol.replaceChildren();
    addItem(ol, `leaf ${hex(leaf)}`);
    steps.forEach((s, i) => {
      addItem(ol, `level ${i + 1}: sibling on the ${s.side} ${hex(s.sibling)} → ${hex(s.result)}`);
    });
    $("path-section").hidden = false;
  }

  async function run() {
    const verdict = $("verdict");
    const steps = $("steps");
    steps.replaceChildren();
    $("statement-section").hidden = true;
    $("path-section").hidden = true;
    verdict.removeAttribute("data-verdict");
    verdict.removeAttribute("data-step");
    verdict.className = "verdict";
    verdict.textContent = "Checking…";
    const keyText = $("log-key").value;
    const report = (name, detail) => addItem(steps, `✓ ${name}: ${detail}`, "pass");
    try {
      const res = await verifyReceipt(
        $("receipt").value, keyText, $("origin").value, report, $("witness-keys").value, $("min-witnesses").value,
      );
      if ($("pin-key").checked) localStorage.setItem(PIN_KEY, keyText.trim());
      verdict.textContent = `✓ Verified: entry ${res.receipt.logIndex} is in log ${res.checkpoint.origin} at tree size ${res.checkpoint.size}.`;
      verdict.className = "verdict ok";
      verdict.dataset.verdict = "ok";
      showStatement(res.receipt.entry.payloadBytes);
      showPath(res.leaf, res.steps);
    } catch (e) {
      const step = e instanceof StepError ? e.step : "unexpected error";
      const message = e instanceof StepError ? e.message : "the check stopped unexpectedly.";
      addItem(steps, `✗ ${step}: ${message}`, "fail");
      verdict.textContent = `✗ Not verified (${step}): ${message}`;
      verdict.className = "verdict fail";
      verdict.dataset.verdict = "fail";
      verdict.dataset.step = step;
    }
  }

  async function runConsistency() {
    const verdict = $("consistency-verdict");
    const steps = $("consistency-steps");
    steps.replaceChildren();
    verdict.removeAttribute("data-verdict");
    verdict.removeAttribute("data-step");
    verdict.className = "verdict";
    verdict.textContent = "Checking…";
    const report = (name, detail) => addItem(steps, `✓ ${name}: ${detail}`, "pass");
    try {
      const res = await checkConsistency($("consistency").value, $("log-key").value, $("origin").value, report);
      verdict.textContent = `✓ Consistent: log ${res.newCp.origin} at size ${res.newCp.size} extends its tree at size ${res.oldCp.size}.`;
      verdict.className = "verdict ok";
      verdict.dataset.verdict = "ok";
    } catch (e) {
      const step = e instanceof StepError ? e.step : "unexpected error";
      const message = e instanceof StepError ? e.message : "the check stopped unexpectedly.";
      addItem(steps, `✗ ${step}: ${message}`, "fail");
      verdict.textContent = `✗ Not consistent (${step}): ${message}`;
      verdict.className = "verdict fail";
      verdict.dataset.verdict = "fail";
      verdict.dataset.step = step;
    }
  }

  function init() {
    const form = $("verify-form");
    if (!form) return;
    const pinned = localStorage.getItem(PIN_KEY);
    if (pinned && !$("log-key").value) {
      $("log-key").value = pinned;
      $("pin-key").checked = true;
    }
    $("pin-key").addEventListener("change", () => {
      if (!$("pin-key").checked) localStorage.removeItem(PIN_KEY);
    });
    $("receipt-file").addEventListener("change", async (ev) => {
      const file = ev.target.files && ev.target.files[0];
      if (file) $("receipt").value = await file.text();
    });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run();
    });
    $("verify-consistency").addEventListener("click", (ev) => {
      ev.preventDefault();
      runConsistency();
    });
    document.body.dataset.verifierReady = "1";
  }

  init();
})();
