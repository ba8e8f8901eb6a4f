// open_cosigned opens a cosigned C2SP checkpoint with Go's golang.org/x/mod/sumdb/note.
//
// Usage: open_cosigned NOTE_FILE LOG_VKEY WITNESS_VKEY...
//
// It prints one JSON document: what note.NewVerifier says about each witness key (its
// algorithm byte 0x04 is tlog-cosignature's, which this version of the package does not
// know), the signers note.Open verifies with the log key alone (the cosignatures must be
// kept as unverified signatures, not rejected), and the signers it verifies when the
// witness keys are given as Go Verifiers for cosignature/v1 written here from the spec
// (c2sp.org/tlog-cosignature), independently of the Python code.
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type cosigV1 struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosigV1) Name() string    { return v.name }
func (v *cosigV1) KeyHash() uint32 { return v.hash }

// Verify checks a timestamped_signature (u64 big-endian time || Ed25519 signature) over
// "cosignature/v1\ntime <t>\n" followed by the note text.
func (v *cosigV1) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t >= 1<<63 {
		return false
	}
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	return ed25519.Verify(v.key, signed, sig[8:])
}

func newCosigV1(vkey string) (*cosigV1, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed witness key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 0x04 {
		return nil, fmt.Errorf("not an Ed25519 cosignature/v1 key")
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	hash := binary.BigEndian.Uint32(h[:4])
	if fmt.Sprintf("%08x", hash) != parts[1] {
		return nil, fmt.Errorf("key ID does not match")
	}
	return &cosigV1{name: parts[0], hash: hash, key: ed25519.PublicKey(raw[1:])}, nil
}

func names(sigs []note.Signature) []string {
	out := []string{}
	for _, s := range sigs {
		out = append(out, s.Name)
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	msg, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	logV, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fail(err)
	}
	result := map[string]interface{}{}
	verifiers := []note.Verifier{logV}
	goErrors := []string{}
	for _, vkey := range os.Args[3:] {
		if _, err := note.NewVerifier(vkey); err != nil {
			goErrors = append(goErrors, err.Error())
		} else {
			goErrors = append(goErrors, "")
		}
		w, err := newCosigV1(vkey)
		if err != nil {
			fail(err)
		}
		verifiers = append(verifiers, w)
	}
	result["new_verifier_errors"] = goErrors

	n, err := note.Open(msg, note.VerifierList(logV))
	if err != nil {
		fail(fmt.Errorf("log key only: %v", err))
	}
	result["log_only_verified"] = names(n.Sigs)
	result["log_only_unverified"] = names(n.UnverifiedSigs)
	result["text"] = n.Text

	n, err = note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fail(fmt.Errorf("with witness keys: %v", err))
	}
	result["verified"] = names(n.Sigs)
	result["unverified"] = names(n.UnverifiedSigs)
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}
