// ailedger dashboard: checks an entry's inclusion in the log in the browser, with WebCrypto.
//
// Formats and algorithms:
//   C2SP signed-note  https://c2sp.org/signed-note   (Ed25519 signatures, key IDs)
//   C2SP checkpoint   https://c2sp.org/tlog-checkpoint
//   C2SP tlog-proof   https://c2sp.org/tlog-proof
//   RFC 6962 §2.1     leaf hash SHA-256(0x00 || entry), node hash SHA-256(0x01 || l || r)
//   RFC 9162 §2.1.3.2 verifying an inclusion proof (the fn/sn walk below)
"use strict";

(function () {
  const panel = document.getElementById("verify-panel");
  if (!panel) {
    return;
  }
  const button = document.getElementById("verify");
  const result = document.getElementById("verify-result");
  const steps = document.getElementById("verify-steps");
  const encoder = new TextEncoder();
  const decoder = new TextDecoder("utf-8", { fatal: true });

  class Failure extends Error {}

  function step(text) {
    const item = document.createElement("li");
    item.textContent = text;
    steps.appendChild(item);
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function equal(a, b) {
    if (a.length !== b.length) {
      return false;
    }
    let diff = 0;
    for (let i = 0; i < a.length; i++) {
      diff |= a[i] ^ b[i];
    }
    return diff === 0;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  // Standard padded base64, only in its canonical spelling.
  function b64(text, what) {
    if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)) {
      throw new Failure(what + " is not valid base64");
    }
    const raw = atob(text);
    const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
    if (btoa(raw) !== text) {
      throw new Failure(what + " is not canonical base64");
    }
    return bytes;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  async function fetchBytes(url, what) {
    let response;
    try {
      response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    } catch (err) {
      throw new Failure("cannot fetch " + what + ": " + err.message);
    }
    if (!response.ok) {
      throw new Failure("the service answered " + response.status + " for " + what);
    }
    return new Uint8Array(await response.arrayBuffer());
  }

  function utf8(bytes, what) {
    try {
      return decoder.decode(bytes);
    } catch (err) {
      throw new Failure(what + " is not valid UTF-8");
    }
  }

  // A signed note: its text (up to the last blank line) and its signature lines.
  function parseNote(text, what) {
    const split = text.lastIndexOf("\n\n");
    if (split < 0 || !text.endsWith("\n")) {
      throw new Failure(what + " is not a signed note");
    }
    const body = text.slice(0, split + 1);
    const signatures = [];
    for (const line of text.slice(split + 2, -1).split("\n")) {
      const match = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!match) {
        throw new Failure(what + " has a malformed signature line");
      }
      const raw = b64(match[2], "a signature of " + what);
      if (raw.length < 5) {
        throw new Failure(what + " has a signature that is too short");
      }
      const keyId = new DataView(raw.buffer).getUint32(0);
      signatures.push({ name: match[1], keyId: keyId, signature: raw.slice(4) });
    }
    return { body: body, signatures: signatures };
  }

  function parseCheckpoint(body, what) {
    const lines = body.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) {
      throw new Failure(what + " is not a checkpoint (origin, size, root)");
    }
    const root = b64(lines[2], "the root hash of " + what);
    if (root.length !== 32) {
      throw new Failure("the root hash of " + what + " is not 32 bytes");
    }
    return { origin: lines[0], size: BigInt(lines[1]), root: root };
  }

  // c2sp.org/tlog-proof@v1: [extra], index, audit path hashes, blank line, signed checkpoint.
  function parseProof(text) {
    const end = text.indexOf("\n\n");
    if (end < 0) {
      throw new Failure("the proof has no blank line before its checkpoint");
    }
    const lines = text.slice(0, end).split("\n");
    if (lines[0] !== "c2sp.org/tlog-proof@v1") {
      throw new Failure("the proof does not start with c2sp.org/tlog-proof@v1");
    }
    let at = 1;
    if (at < lines.length && lines[at].startsWith("extra ")) {
      at += 1;
    }
    const index = at < lines.length ? /^index (0|[1-9][0-9]*)$/.exec(lines[at]) : null;
    if (!index) {
      throw new Failure("the proof has no index line");
    }
    const hashes = lines.slice(at + 1).map((line, i) => {
      const h = b64(line, "proof hash #" + i);
      if (h.length !== 32) {
        throw new Failure("proof hash #" + i + " is not 32 bytes");
      }
      return h;
    });
    return { index: BigInt(index[1]), hashes: hashes, checkpoint: text.slice(end + 2) };
  }

  // The log's verifier key <name>+<key ID>+<base64(0x01 || Ed25519 key)>.
  async function parseVerifierKey(vkey) {
    // the name holds no "+", the base64 key may: split at the first two only
    const first = vkey.indexOf("+");
    const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
    const parts = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
    if (first <= 0 || second < 0 || !/^[0-9a-f]{8}$/.test(parts[1])) {
      throw new Failure("the log key " + vkey + " is malformed");
    }
    const key = b64(parts[2], "the log key");
    if (key.length !== 33 || key[0] !== 1) {
      throw new Failure("the log key is not an Ed25519 key");
    }
    const digest = await sha256(concat(encoder.encode(parts[0] + "\n"), key));
    const keyId = new DataView(digest.buffer).getUint32(0);
    if (keyId !== parseInt(parts[1], 16)) {
      throw new Failure("the log key's ID does not match its name and key");
    }
    return { name: parts[0], keyId: keyId, raw: key.slice(1) };
  }

  // Check the note's signature by the log's key; return a description, or throw Failure.
  async function checkSignature(note, key, what) {
    const mine = note.signatures.filter((s) => s.name === key.name && s.keyId === key.keyId);
    if (mine.length === 0) {
      throw new Failure(what + " carries no signature by the log key " + key.name);
    }
    let publicKey;
    try {
      publicKey = await crypto.subtle.importKey("raw", key.raw, { name: "Ed25519" }, false, [
        "verify",
      ]);
    } catch (err) {
      return null; // no WebCrypto Ed25519 in this browser
    }
    for (const s of mine) {
      const good =
        s.signature.length === 64 &&
        (await crypto.subtle.verify({ name: "Ed25519" }, publicKey, s.signature,
          encoder.encode(note.body)));
      if (!good) {
        throw new Failure("the signature on " + what + " does not verify with the log key");
      }
    }
    return "signed by " + key.name;
  }

  // RFC 9162 §2.1.3.2: the root the audit path leads to from the leaf at index in size.
  async function rootFromPath(index, size, leaf, path) {
    if (index >= size) {
      throw new Failure("entry " + index + " is outside the tree of size " + size);
    }
    let fn = index;
    let sn = size - 1n;
    let r = leaf;
    for (const p of path) {
      if (sn === 0n) {
        throw new Failure("the proof has more hashes than a tree of size " + size + " needs");
      }
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) {
      throw new Failure("the proof has fewer hashes than a tree of size " + size + " needs");
    }
    return r;
  }

  async function verify() {
    const index = BigInt(panel.dataset.index);
    // 1. Fetch the entry's proof and bytes, then the log's latest checkpoint (after the
    //    proof: the served checkpoint only grows, so it is never older than the proof's).
    const [proofRaw, entry] = await Promise.all([
      fetchBytes(panel.dataset.proofUrl, "the proof"),
      fetchBytes(panel.dataset.rawUrl, "the entry"),
    ]);
    const latestRaw = await fetchBytes(panel.dataset.checkpointUrl, "the checkpoint");
    step("fetched the checkpoint, the proof and the entry (" + entry.length + " bytes)");
    // 2. Parse the proof; it must be for this entry.
    const proof = parseProof(utf8(proofRaw, "the proof"));
    if (proof.index !== index) {
      throw new Failure("the proof is for entry " + proof.index + ", not entry " + index);
    }
    step("proof for entry " + index + " with " + proof.hashes.length + " hashes");
    // 3. The proof's checkpoint: signed by the log's key, for this log.
    const note = parseNote(proof.checkpoint, "the proof's checkpoint");
    const checkpoint = parseCheckpoint(note.body, "the proof's checkpoint");
    if (checkpoint.origin !== panel.dataset.origin) {
      throw new Failure("the checkpoint is for log " + checkpoint.origin + ", not " +
        panel.dataset.origin);
    }
    let signed = null;
    if (panel.dataset.vkey) {
      const key = await parseVerifierKey(panel.dataset.vkey);
      signed = await checkSignature(note, key, "the proof's checkpoint");
      const latest = parseNote(utf8(latestRaw, "the checkpoint"), "the served checkpoint");
      await checkSignature(latest, key, "the served checkpoint");
      const head = parseCheckpoint(latest.body, "the served checkpoint");
      if (head.size === checkpoint.size && !equal(head.root, checkpoint.root)) {
        throw new Failure("the log signed two checkpoints of size " + head.size +
          " with different roots");
      }
      if (head.size < checkpoint.size) {
        throw new Failure("the served checkpoint (size " + head.size +
          ") is older than the proof's (size " + checkpoint.size + ")");
      }
      step(signed ? "checkpoint signature valid (" + signed + ", Ed25519)"
        : "checkpoint signature not checked: this browser has no WebCrypto Ed25519");
    } else {
      step("checkpoint signature not checked: the page names no log key");
    }
    step("checkpoint of size " + checkpoint.size + " with root " + hex(checkpoint.root));
    // 4. RFC 6962 leaf hash of the exact entry bytes.
    const leaf = await leafHash(entry);
    step("leaf hash " + hex(leaf));
    // 5. Recompute the root from the audit path and compare.
    const root = await rootFromPath(index, checkpoint.size, leaf, proof.hashes);
    if (!equal(root, checkpoint.root)) {
      throw new Failure("recomputed root " + hex(root) + " does not match the checkpoint's root " +
        hex(checkpoint.root) + ": the entry or its proof was altered");
    }
    step("recomputed root matches");
    return "verified: entry " + index + " is in the log's tree of size " + checkpoint.size +
      (signed ? ", under a valid signed checkpoint" : " (checkpoint signature not checked)");
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    steps.textContent = "";
    result.className = "result";
    result.textContent = "verifying…";
    try {
      result.textContent = await verify();
      result.className = "result ok";
    } catch (err) {
      result.textContent = "failed: " + (err instanceof Failure ? err.message : String(err));
      result.className = "result bad";
    } finally {
      button.disabled = false;
    }
  });
})();
