// Package tokenizer turns text into token ids and back.
//
// Two tokenizers are provided:
//   - Byte: ids 0..255 are the bytes of the UTF-8 text and 256 is end-of-text (vocab 257).
//   - BPE: GPT-2 byte-level BPE read from a Hugging Face vocab.json + merges.txt pair
//     (byte-to-unicode map, GPT-2 pre-tokenisation, merges applied by rank,
//     "<|endoftext|>" as the only special token).
//
// FromDir picks one for a model directory.
package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Tokenizer maps text to token ids and back.
type Tokenizer interface {
	// Encode returns the token ids of s.
	Encode(s string) []int
	// Decode returns the text of ids. Ids outside the vocabulary are dropped.
	Decode(ids []int) string
	// VocabSize is the number of ids (the largest id + 1).
	VocabSize() int
	// EOT is the end-of-text id.
	EOT() int
}

// EndOfText is the GPT-2 end-of-text special token.
const EndOfText = "<|endoftext|>"

// Byte is the byte-level tokenizer: ids 0..255 are bytes, 256 is end-of-text.
//
// Encode never produces 256: the text "<|endoftext|>" is encoded as its 13 bytes,
// so every string round-trips exactly. Decode drops 256 and ids outside [0,256].
type Byte struct{}

// ByteEOT is the end-of-text id of the byte-level tokenizer.
const ByteEOT = 256

// Encode returns the bytes of s as ids.
func (Byte) Encode(s string) []int {
	ids := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int(s[i])
	}
	return ids
}

// Decode returns the bytes of ids 0..255 as a string; other ids are dropped.
func (Byte) Decode(ids []int) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < 256 {
			b = append(b, byte(id))
		}
	}
	return string(b)
}

// VocabSize is 257.
func (Byte) VocabSize() int { return 257 }

// EOT is 256.
func (Byte) EOT() int { return ByteEOT }

// Files of a GPT-2 BPE tokenizer and the optional selector in a model directory.
const (
	VocabFile  = "vocab.json"
	MergesFile = "merges.txt"
	// ConfigFile is Hugging Face's tokenizer_config.json; only "tokenizer_class" is read.
	ConfigFile = "tokenizer_config.json"
)

// FromDir returns the tokenizer of a model directory:
//   - if tokenizer_config.json exists and its "tokenizer_class" is "byte" or
//     "ByteTokenizer" (case-insensitive), the byte-level tokenizer;
//   - if it names "bpe", "GPT2Tokenizer" or "GPT2TokenizerFast", BPE, which then requires
//     vocab.json and merges.txt;
//   - otherwise BPE when both vocab.json and merges.txt exist, else byte-level.
func FromDir(dir string) (Tokenizer, error) {
	class := ""
	if b, err := os.ReadFile(filepath.Join(dir, ConfigFile)); err == nil {
		var cfg struct {
			TokenizerClass string `json:"tokenizer_class"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
		}
		class = strings.ToLower(cfg.TokenizerClass)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	vocab, merges := filepath.Join(dir, VocabFile), filepath.Join(dir, MergesFile)
	switch class {
	case "byte", "bytetokenizer":
		return Byte{}, nil
	case "bpe", "gpt2tokenizer", "gpt2tokenizerfast":
		return LoadBPE(vocab, merges)
	case "":
	default:
		return nil, fmt.Errorf("%s: unknown tokenizer_class %q (want byte, bpe, GPT2Tokenizer or GPT2TokenizerFast)",
			filepath.Join(dir, ConfigFile), class)
	}
	if exists(vocab) && exists(merges) {
		return LoadBPE(vocab, merges)
	}
	return Byte{}, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
