// Command gocheck verifies ECP's cosigned checkpoints with Go's
// golang.org/x/mod/sumdb/note, the reference signed-note implementation.
//
// Usage: gocheck NOTE_FILE LOG_VKEY [WITNESS_VKEY ...]
//
// The log's Ed25519 key is sumdb/note's own verifier; the witnesses'
// cosignature/v1 keys (type 0x04) get the small note.Verifier below, as the
// package leaves other algorithms to its callers. It prints one line per
// verified signature ("verified NAME") and exits non-zero if note.Open fails.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

const algCosignatureV1 = 0x04

type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }

// Verify checks a tlog-cosignature/v1 signature: an 8-byte big-endian
// timestamp, then Ed25519 over "cosignature/v1\ntime <ts>\n" || body.
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	if ts > 1<<63-1 {
		return false
	}
	var m bytes.Buffer
	m.WriteString("cosignature/v1\ntime " + strconv.FormatUint(ts, 10) + "\n")
	m.Write(msg)
	return ed25519.Verify(v.key, m.Bytes(), sig[8:])
}

func newCosigVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("malformed witness vkey")
	}
	name, hexHash, b64 := parts[0], parts[1], parts[2]
	h, err := strconv.ParseUint(hexHash, 16, 32)
	if err != nil || len(hexHash) != 8 {
		return nil, errors.New("malformed witness key hash")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != algCosignatureV1 {
		return nil, errors.New("not a cosignature/v1 Ed25519 key")
	}
	// Key hash as c2sp.org/tlog-cosignature defines it.
	d := sha256.Sum256(append([]byte(name+"\n"), raw...))
	if binary.BigEndian.Uint32(d[:4]) != uint32(h) {
		return nil, errors.New("witness key hash does not match the key")
	}
	return &cosigVerifier{name: name, hash: uint32(h), key: ed25519.PublicKey(raw[1:])}, nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: gocheck NOTE_FILE LOG_VKEY [WITNESS_VKEY ...]")
		os.Exit(2)
	}
	msg, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logV, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "log key:", err)
		os.Exit(2)
	}
	verifiers := []note.Verifier{logV}
	for _, vk := range os.Args[3:] {
		v, err := newCosigVerifier(vk)
		if err != nil {
			fmt.Fprintln(os.Stderr, "witness key:", err)
			os.Exit(2)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "note.Open:", err)
		os.Exit(1)
	}
	for _, s := range n.Sigs {
		fmt.Println("verified", s.Name)
	}
	for _, s := range n.UnverifiedSigs {
		fmt.Println("unverified", s.Name)
	}
}
