package pretrain

import (
	"math/rand/v2"
	"strings"
)

// JoinTexts makes SFT examples of n texts each: text i followed by n-1 other texts of its group
// (groups[i]; nil groups: one group), drawn uniformly with replacement from the group's other
// texts by a PCG stream keyed by seed, and joined by a space. A task whose texts are single
// sentences (the reviews task's UCI sentences) thereby trains responses of n sentences that
// share a source and a sentiment. (Measured on small-reviews-v2 and not used by its recipe: the
// greedy text grew longer but changed subject mid-review, and fresh-pair accuracy fell; see
// trainer/task/models/README.md.) A text alone in its group stays alone; n <= 1 returns texts
// unchanged. Example i always starts with text i, so the examples' openings are the texts'.
func JoinTexts(texts, groups []string, n int, seed uint64) []string {
	if n <= 1 {
		return texts
	}
	members := map[string][]int{}
	group := func(i int) string {
		if groups == nil {
			return ""
		}
		return groups[i]
	}
	for i := range texts {
		members[group(i)] = append(members[group(i)], i)
	}
	rng := rand.New(rand.NewPCG(seed, 0x701e0000))
	out := make([]string, len(texts))
	for i, t := range texts {
		g := members[group(i)]
		if len(g) < 2 {
			out[i] = t
			continue
		}
		parts := []string{t}
		for range n - 1 {
			j := g[rng.IntN(len(g)-1)]
			if j == i { // the draw is over the group without i: i's slot stands for the last member
				j = g[len(g)-1]
			}
			parts = append(parts, texts[j])
		}
		out[i] = strings.Join(parts, " ")
	}
	return out
}

// KeepLong returns the texts of at least minWords whitespace-separated words, with their groups
// (nil groups stay nil), in input order. A task whose held-out examples are sentences of at least
// some length (the reviews task's: a 2-4-word opening and 4-16 more words) can SFT on training
// texts of the same population, rather than on three-word sentences ("Love this product.") that
// teach the members to stop early. minWords <= 0 keeps everything.
func KeepLong(texts, groups []string, minWords int) ([]string, []string) {
	var keptT, keptG []string
	for i, t := range texts {
		if len(strings.Fields(t)) < minWords {
			continue
		}
		keptT = append(keptT, t)
		if groups != nil {
			keptG = append(keptG, groups[i])
		}
	}
	return keptT, keptG
}
