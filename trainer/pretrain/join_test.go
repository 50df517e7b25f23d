package pretrain

import (
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
)

func TestJoinTexts(t *testing.T) {
	texts := []string{"a1.", "a2.", "a3.", "b1.", "c1."}
	groups := []string{"a", "a", "a", "b", "c"}
	for _, tc := range []struct {
		name   string
		groups []string
		n      int
		check  func(i int, parts []string) string // "" when example i is right
	}{
		{"n=1 unchanged", groups, 1, func(i int, p []string) string {
			if len(p) != 1 || p[0] != texts[i] {
				return "changed"
			}
			return ""
		}},
		{"pairs within the group, never the text itself", groups, 2, func(i int, p []string) string {
			switch {
			case p[0] != texts[i]:
				return "does not start with its own text"
			case groups[i] == "b" || groups[i] == "c": // alone in its group
				if len(p) != 1 {
					return "a lone text was joined"
				}
			case len(p) != 2:
				return "not a pair"
			case p[1] == p[0] || p[1][0] != p[0][0]:
				return "partner is itself or from another group"
			}
			return ""
		}},
		{"nil groups: one group", nil, 3, func(i int, p []string) string {
			if len(p) != 3 || p[0] != texts[i] || p[1] == p[0] || p[2] == p[0] {
				return "not three texts starting with its own"
			}
			return ""
		}},
	} {
		got := JoinTexts(texts, tc.groups, tc.n, 7)
		if len(got) != len(texts) {
			t.Fatalf("%s: %d examples, want %d", tc.name, len(got), len(texts))
		}
		for i, ex := range got {
			if msg := tc.check(i, strings.Split(ex, " ")); msg != "" {
				t.Errorf("%s: example %d %q: %s", tc.name, i, ex, msg)
			}
		}
	}
	// Deterministic by seed; another seed draws other partners; every partner of a 3-group is
	// drawn.
	many := make([]string, 60)
	for i := range many {
		many[i] = string(rune('a' + i%3))
	}
	if a, b := JoinTexts(many, nil, 2, 1), JoinTexts(many, nil, 2, 1); strings.Join(a, "|") != strings.Join(b, "|") {
		t.Error("not deterministic")
	}
	if a, b := JoinTexts(many, nil, 2, 1), JoinTexts(many, nil, 2, 2); strings.Join(a, "|") == strings.Join(b, "|") {
		t.Error("seeds 1 and 2 drew the same partners")
	}
	seen := map[string]bool{}
	for seed := range uint64(20) {
		for _, ex := range JoinTexts(texts[:3], nil, 2, seed) {
			seen[ex] = true
		}
	}
	if len(seen) != 6 { // 3 texts x 2 partners each
		t.Errorf("%d distinct pairs drawn over 20 seeds, want all 6: %v", len(seen), seen)
	}
}

// TestSFTHeldOutJoinsOnlyHeldOut: with Join, no held-out example contains a training text.
func TestSFTHeldOutJoinsOnlyHeldOut(t *testing.T) {
	tk := reviewsTask(t)
	if tk.SFTGroups == nil {
		t.Fatal("the reviews task's sft.jsonl has no groups")
	}
	o := SFTOptions{LMOptions: LMOptions{Seed: 3}, Join: 2, Groups: tk.SFTGroups}
	held := SFTHeldOut(tk.SFT, o)
	_, plainHeld := SplitHeldOut(tk.SFT)
	if len(held) != len(plainHeld) || len(held) == 0 {
		t.Fatalf("%d joined held-out examples, want %d", len(held), len(plainHeld))
	}
	isHeld := map[string]bool{}
	for _, h := range plainHeld {
		isHeld[h] = true
	}
	joined := 0
	for i, ex := range held {
		if !strings.HasPrefix(ex, plainHeld[i]) {
			t.Errorf("example %d %q does not start with held-out text %q", i, ex, plainHeld[i])
		}
		if rest := strings.TrimPrefix(ex, plainHeld[i]); rest != "" {
			joined++
			if !isHeld[strings.TrimPrefix(rest, " ")] {
				t.Errorf("example %d joins %q, not a held-out text", i, rest)
			}
		}
	}
	if joined < len(held)/2 {
		t.Errorf("only %d of %d held-out examples joined", joined, len(held))
	}
	if _, err := SFT(model.Init(tinyConfig(), 1), tk.SFT, 1, 2, 4, SFTOptions{Join: 2, Groups: tk.SFTGroups[1:]}); err == nil || !strings.Contains(err.Error(), "groups for") {
		t.Errorf("SFT with fewer groups than texts: err %v", err)
	}
}

func TestKeepLong(t *testing.T) {
	texts := []string{"Love this product.", "The food was good and hot.", "  a  b\tc d ", ""}
	for _, tc := range []struct {
		min        int
		groups     []string
		wantT      []string
		wantGroups []string
	}{
		{0, nil, texts, nil},
		{4, []string{"x", "y", "z", "w"}, []string{"The food was good and hot.", "  a  b\tc d "}, []string{"y", "z"}},
		{6, nil, []string{"The food was good and hot."}, nil},
		{7, []string{"x", "y", "z", "w"}, nil, nil},
	} {
		gotT, gotG := KeepLong(texts, tc.groups, tc.min)
		if strings.Join(gotT, "|") != strings.Join(tc.wantT, "|") || len(gotT) != len(tc.wantT) ||
			strings.Join(gotG, "|") != strings.Join(tc.wantGroups, "|") || (gotG == nil) != (tc.wantGroups == nil) {
			t.Errorf("KeepLong(min %d) = %q %q, want %q %q", tc.min, gotT, gotG, tc.wantT, tc.wantGroups)
		}
	}
}
