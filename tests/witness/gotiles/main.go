// Command gotiles reads an ECP log served as C2SP tlog-tiles with Go's
// golang.org/x/mod/sumdb/tlog and checks it against the signed checkpoint.
//
// Usage: gotiles DIR LOG_VKEY
//
// It opens DIR/checkpoint with sumdb/note, recomputes the tree root from
// the hash tiles (tlog.TileHashReader, which authenticates every tile it
// reads against the root), then for every entry in the entry bundles proves
// and checks its inclusion (tlog.ProveRecord, tlog.CheckRecord). Go's tile
// paths carry the height (tile/8/L/N); tlog-tiles drops it (tile/L/N).
package main

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type dirTiles struct{ dir string }

func (d dirTiles) Height() int { return 8 }

func c2spPath(t tlog.Tile) string {
	// tlog's path is tile/8/L/NNN[.p/W]; drop the height element.
	p := t.Path()
	return strings.Replace(p, "tile/8/", "tile/", 1)
}

func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := os.ReadFile(filepath.Join(d.dir, c2spPath(t)))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (d dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gotiles DIR LOG_VKEY")
		os.Exit(2)
	}
	dir := os.Args[1]
	msg, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		fail("%v", err)
	}
	v, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fail("log key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		fail("note.Open: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("size: %v", err)
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		fail("root hash: %v", err)
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	reader := tlog.TileHashReader(tree, dirTiles{dir})
	got, err := tlog.TreeHash(size, reader)
	if err != nil {
		fail("TreeHash: %v", err)
	}
	if got != root {
		fail("root from tiles %v != checkpoint root %v", got, root)
	}
	checked := int64(0)
	for bundle := int64(0); bundle*256 < size; bundle++ {
		w := size - bundle*256
		t := tlog.Tile{H: 8, L: 0, N: bundle, W: 256}
		if w < 256 {
			t.W = int(w)
		}
		data, err := os.ReadFile(filepath.Join(dir, strings.Replace(c2spPath(t), "tile/0/", "tile/entries/", 1)))
		if err != nil {
			fail("entry bundle: %v", err)
		}
		for len(data) > 0 {
			if len(data) < 2 {
				fail("truncated bundle")
			}
			l := int(binary.BigEndian.Uint16(data))
			entry := data[2 : 2+l]
			data = data[2+l:]
			proof, err := tlog.ProveRecord(size, checked, reader)
			if err != nil {
				fail("ProveRecord %d: %v", checked, err)
			}
			if err := tlog.CheckRecord(proof, size, root, checked, tlog.RecordHash(entry)); err != nil {
				fail("CheckRecord %d: %v", checked, err)
			}
			checked++
		}
	}
	if checked != size {
		fail("bundles hold %d entries, checkpoint says %d", checked, size)
	}
	fmt.Printf("ok %d\n", size)
}
