package pipeline

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

func TestPairRewardAccuracy(t *testing.T) {
	cases := []struct {
		name                     string
		polC, polR, initC, initR []float64
		acc, margin              float64
	}{
		{"empty", nil, nil, nil, nil, 0, 0},
		// r(chosen) = -10-(-11) = 1, r(rejected) = -12-(-11) = -1: right, margin 2.
		{"one right", []float64{-10}, []float64{-12}, []float64{-11}, []float64{-11}, 1, 2},
		// The policy prefers the rejected response more than the initial model does.
		{"one wrong", []float64{-10}, []float64{-8}, []float64{-10}, []float64{-9}, 0, -1},
		// The policy equals the initial model: every reward is 0, every pair a tie.
		{"policy is initial", []float64{-3, -7}, []float64{-5, -2}, []float64{-3, -7}, []float64{-5, -2}, 0.5, 0},
		// rewards (1,-1) right, (0,1) wrong, (-1,-1) tie: (1 + 0 + 0.5)/3; margins 2, -1, 0.
		{"right wrong tie", []float64{-10, -5, -3}, []float64{-12, -4, -3}, []float64{-11, -5, -2}, []float64{-11, -5, -2}, 0.5, 1.0 / 3},
		// Log-probs that are lower in absolute terms still win when the reward is higher:
		// r(chosen) = -20-(-25) = 5 > r(rejected) = -6-(-8) = 2.
		{"reward not log-prob", []float64{-20}, []float64{-6}, []float64{-25}, []float64{-8}, 1, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			acc, margin := pairRewardAccuracy(tc.polC, tc.polR, tc.initC, tc.initR)
			if !near(acc, tc.acc, 1e-12) || !near(margin, tc.margin, 1e-12) {
				t.Fatalf("accuracy %v margin %v, want %v %v", acc, margin, tc.acc, tc.margin)
			}
		})
	}
}

func TestLengthConfound(t *testing.T) {
	cases := []struct {
		name            string
		margin          []float64
		lenC, lenR      []int
		follows, longer float64
		ok              bool
	}{
		{"empty", nil, nil, nil, 0, 0, false},
		{"equal lengths only", []float64{1, -1}, []int{5, 7}, []int{5, 7}, 0, 0, false},
		// Chosen longer and r prefers it: follows; chosen shorter and r prefers it: does not.
		{"follows and not", []float64{2, 3}, []int{9, 4}, []int{5, 8}, 0.5, 0.5, true},
		// r prefers the rejected (margin < 0), which is the longer: follows length, gold wants shorter.
		{"rejected longer, r for rejected", []float64{-1}, []int{3}, []int{6}, 1, 0, true},
		// A tied reward counts 1/2; the equal-length pair is left out of both fractions.
		{"tie and equal", []float64{0, 5, 1}, []int{6, 4, 3}, []int{2, 4, 1}, 0.75, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, l, ok := lengthConfound(tc.margin, tc.lenC, tc.lenR)
			if ok != tc.ok || !near(f, tc.follows, 1e-12) || !near(l, tc.longer, 1e-12) {
				t.Fatalf("got %v %v %v, want %v %v %v", f, l, ok, tc.follows, tc.longer, tc.ok)
			}
		})
	}
}

func TestLengthBalancedAccuracy(t *testing.T) {
	cases := []struct {
		name       string
		margin     []float64
		lenC, lenR []int
		acc        float64
		ok         bool
	}{
		{"empty", nil, nil, nil, 0, false},
		{"chosen always longer", []float64{1, 1}, []int{9, 8}, []int{5, 7}, 0, false},
		// A length ranker on 3 chosen-longer pairs and 1 chosen-shorter pair: 1 and 0, mean 0.5,
		// although its plain accuracy is 0.75.
		{"length ranker", []float64{2, 3, 1, -4}, []int{9, 8, 7, 2}, []int{5, 4, 3, 6}, 0.5, true},
		// Right on both kinds; the equal-length pair (wrong) is left out.
		{"knows beyond length", []float64{2, 3, -1}, []int{9, 2, 5}, []int{5, 4, 5}, 1, true},
		// Chosen longer: 1 right, 1 tie (1/2) -> 0.75; chosen shorter: 1 right of 2 -> 0.5.
		{"ties count half", []float64{1, 0, 2, -1}, []int{6, 5, 1, 2}, []int{2, 1, 4, 3}, 0.625, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			acc, ok := lengthBalancedAccuracy(tc.margin, tc.lenC, tc.lenR)
			if ok != tc.ok || !near(acc, tc.acc, 1e-12) {
				t.Fatalf("got %v %v, want %v %v", acc, ok, tc.acc, tc.ok)
			}
		})
	}
}

func TestTextStats(t *testing.T) {
	cases := []struct {
		name   string
		texts  []string
		tokens []int
		cut    []bool
		want   TextStats
	}{
		{"none", nil, nil, nil, TextStats{}},
		// Words: [the movie was good] [good good zzqx]: 7 words, 6 in the dictionary; unigrams 5
		// distinct of 7; bigrams "the movie", "movie was", "was good", "good good", "good zzqx" all
		// distinct (none spans the two texts).
		{"two texts", []string{"The movie was good.", "good good zzqx"}, []int{19, 15}, nil,
			TextStats{Texts: 2, MeanTokens: 17, MeanWords: 3.5, Distinct1: 5.0 / 7, Distinct2: 1, Fluency: 6.0 / 7}},
		// No word at all: lengths count, every ratio is 0.
		{"no words", []string{"!!", ""}, []int{2, 0}, nil, TextStats{Texts: 2, MeanTokens: 1}},
		// A number is a word; a run of letters that is no word is not. "fun fun" repeats.
		{"numbers and junk", []string{"42 qwxv fun fun"}, []int{15}, nil,
			TextStats{Texts: 1, MeanTokens: 15, MeanWords: 4, Distinct1: 3.0 / 4, Distinct2: 1, Fluency: 3.0 / 4}},
		// Cut by the budget inside "serv": fluency leaves the fragment out ("the": 1 of 1), the
		// other statistics count it. The second text was cut after a space: nothing to leave out
		// (1 of 2). Together 2 of 3.
		{"cut texts", []string{"the serv", "zzqx good "}, []int{8, 10}, []bool{true, true},
			TextStats{Texts: 2, Cut: 2, MeanTokens: 9, MeanWords: 2, Distinct1: 1, Distinct2: 1, Fluency: 2.0 / 3}},
		// The same text ended by the model: "serv" is a word it wrote, and not a dictionary word.
		{"ended texts", []string{"the serv"}, []int{8}, []bool{false},
			TextStats{Texts: 1, MeanTokens: 8, MeanWords: 2, Distinct1: 1, Distinct2: 1, Fluency: 0.5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := textStats(tc.texts, tc.tokens, tc.cut)
			g, w := []float64{got.MeanTokens, got.MeanWords, got.Distinct1, got.Distinct2, got.Fluency},
				[]float64{tc.want.MeanTokens, tc.want.MeanWords, tc.want.Distinct1, tc.want.Distinct2, tc.want.Fluency}
			for i := range g {
				if !near(g[i], w[i], 1e-12) || got.Texts != tc.want.Texts || got.Cut != tc.want.Cut {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
			}
		})
	}
}

func TestFluencyPoolsWords(t *testing.T) {
	// Pooled over words, not averaged over texts: 1 known word of 1, 0 of 3 -> 1/4, not 1/2.
	if got := fluency([]string{"good", "zzqx qwxv zzqx"}, nil); !near(got, 0.25, 1e-12) {
		t.Fatalf("fluency %v, want 0.25", got)
	}
}

func TestEndsInWord(t *testing.T) {
	for text, want := range map[string]bool{
		"": false, "!": false, "the serv": true, "the serv.": false, "the ": false, "don'": true,
		"it’": true, "it ’": false, "42": true, "a-": false,
	} {
		if got := endsInWord(text); got != want {
			t.Errorf("endsInWord(%q) = %v, want %v", text, got, want)
		}
	}
}

func TestResponseTokens(t *testing.T) {
	for _, tc := range []struct {
		ids  []int
		want int
	}{{nil, 0}, {[]int{256}, 0}, {[]int{1, 2, 256}, 2}, {[]int{1, 2, 3}, 3}, {[]int{256, 1}, 2}} {
		if got := responseTokens(tc.ids, 256); got != tc.want {
			t.Errorf("responseTokens(%v) = %d, want %d", tc.ids, got, tc.want)
		}
	}
}

func TestSpreadIndices(t *testing.T) {
	cases := []struct {
		n, want int
		out     []int
	}{
		{0, 12, nil},
		{5, 0, nil},
		{6, 12, []int{0, 1, 2, 3, 4, 5}},
		{12, 12, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
		// (2i+1)*13/24
		{13, 12, []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12}},
		{24, 12, []int{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23}},
		// (2i+1)*300/24 = 12.5, 37.5, ...
		{300, 12, []int{12, 37, 62, 87, 112, 137, 162, 187, 212, 237, 262, 287}},
		{10, 3, []int{1, 5, 8}},
	}
	for _, tc := range cases {
		if got := spreadIndices(tc.n, tc.want); !reflect.DeepEqual(got, tc.out) {
			t.Errorf("spreadIndices(%d, %d) = %v, want %v", tc.n, tc.want, got, tc.out)
		}
	}
}

// A result.json written before every completion was kept still reads, and GreedyRecords falls
// back to its dozen examples; a new one gives every prompt.
func TestGreedyRecordsReadsOldResults(t *testing.T) {
	old := `{"phase":2,"split":"eval","prompts":2,"winRate":0.5,
	  "examples":[{"prompt":"p0","completion":"c0","reference":"r0","score":1,"referenceScore":2}],
	  "perPrompt":[{"win":0,"gold":1,"heldOut":0.5},{"win":1,"gold":3,"heldOut":0.1}]}`
	var res EvalResult
	if err := json.Unmarshal([]byte(old), &res); err != nil {
		t.Fatal(err)
	}
	if got := res.GreedyRecords(); len(got) != 1 || got[0] != (Example{"p0", "c0", "r0", 1, 2}) {
		t.Fatalf("old result: %+v", got)
	}
	if res.Greedy != nil || res.PerPrompt[1].RefGold != nil {
		t.Fatal("fields an old result lacks must stay absent")
	}
	two := 2.0
	res = EvalResult{PerPrompt: []PromptOutcome{{Prompt: "p", Completion: "c", Reference: "r", GoldReward: 1, RefGold: &two}}}
	data, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), `"examples"`) {
		t.Fatalf("new results keep no separate examples list: %s", data)
	}
	var back EvalResult
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.GreedyRecords(); len(got) != 1 || got[0] != (Example{"p", "c", "r", 1, 2}) {
		t.Fatalf("new result: %+v", got)
	}
}

// A small run of the bundled tiny model on its task, with the real gold annotator and an eval
// only after the last phase: every evaluated prompt keeps its greedy completion, the diagnostics
// are present and in range, and phase 1 has no fresh-pair accuracy.
func TestDiagnosticsTinyReviews(t *testing.T) {
	b := makeRun("diag")
	s := &b.ar.Spec
	s.Model.Path, s.Model.Builtin = "", "tiny-reviews"
	s.Ensemble.Rank, s.Ensemble.Alpha = 0, 0 // the bundled adapters' (the defaults)
	s.Budget.Pairs, s.Budget.PairsPerStep, s.Budget.EvalPrompts = 32, 8, 16
	s.Sampler.MaxNewTokens = 16
	s.Trainer.LearningRate = "0.003"
	e := b.Env(t, t.TempDir())
	e.Scorer = nil // the spec's gold annotator
	sums, err := e.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 2 || sums[0].Evaluated || !sums[1].Evaluated {
		t.Fatalf("want 2 phases, the last evaluated: %+v", sums)
	}
	unit := func(what string, v *float64) {
		t.Helper()
		if v == nil || *v < 0 || *v > 1 || math.IsNaN(*v) {
			t.Fatalf("%s = %v, want a value in [0,1]", what, fmtOpt(v, "%g"))
		}
	}
	// Phase 1: no fresh-pair accuracy anywhere (not 0.5), a train-pair accuracy.
	if sums[0].FreshPairAccuracy != nil {
		t.Fatalf("phase 1 has a fresh-pair accuracy: %v", *sums[0].FreshPairAccuracy)
	}
	if _, err := os.Stat(e.WS.pairAccuracyPath(0, 1)); !os.IsNotExist(err) {
		t.Fatalf("phase 1 fresh-pair file: %v", err)
	}
	if r, _ := e.Done(1, v1alpha1.StageTrain, 0); r.FreshPairAccuracy != nil || r.PrevTrainPairAccuracy != nil {
		t.Fatalf("phase 1 train result has pair diagnostics: %+v", r)
	}
	unit("phase 1 train-pair accuracy", sums[0].TrainPairAccuracy)
	unit("phase 2 fresh-pair accuracy", sums[1].FreshPairAccuracy)
	unit("phase 2 train-pair accuracy", sums[1].TrainPairAccuracy)
	// Sampled responses differ in length, so the length confound is measured on the fresh pairs.
	unit("phase 2 r follows length", sums[1].FreshRewardFollowsLength)
	unit("phase 2 gold prefers longer", sums[1].FreshGoldPrefersLonger)
	// The label stage measures how many pairs the built-in gold annotator's guard decided, and
	// the stage result (what a pod reports) carries it, not only the shard's marker.
	unit("phase 1 guard-decided", sums[0].GuardDecided)
	if r, err := e.Label(1, 0, 1); err != nil || r.GuardDecided == nil || float64(*r.GuardDecided)/float64(r.Pairs) != *sums[0].GuardDecided {
		t.Errorf("label stage result: guard-decided %v (err %v), summary %v", r.GuardDecided, err, *sums[0].GuardDecided)
	}
	// The stage results carry what the files hold: member 0 of phase 2 the fresh-pair accuracy and
	// phase 1's train-pair accuracy, the other member neither; the eval phase 2's train-pair accuracy.
	r0, _ := e.Done(2, v1alpha1.StageTrain, 0)
	r1, _ := e.Done(2, v1alpha1.StageTrain, 1)
	if !reflect.DeepEqual(r0.FreshPairAccuracy, sums[1].FreshPairAccuracy) || !reflect.DeepEqual(r0.PrevTrainPairAccuracy, sums[0].TrainPairAccuracy) ||
		r0.FreshLengthBalanced == nil || !reflect.DeepEqual(r0.FreshLengthBalanced, sums[1].FreshLengthBalanced) ||
		r1.FreshPairAccuracy != nil || r1.PrevTrainPairAccuracy != nil || r1.FreshLengthBalanced != nil {
		t.Fatalf("train results: member 0 %+v, member 1 %+v", r0, r1)
	}
	rev, _ := e.Done(2, v1alpha1.StageEval, -1)
	if !reflect.DeepEqual(rev.TrainPairAccuracy, sums[1].TrainPairAccuracy) || rev.Fluency == nil {
		t.Fatalf("eval result: %+v", rev)
	}
	fresh, err := e.FreshPairAccuracy(2)
	if err != nil || fresh.PolicyPhase != 1 || fresh.PairsPhase != 2 || int64(fresh.Pairs) != sums[1].Pairs || fresh.MeanMargin == nil {
		t.Fatalf("fresh-pair file: %+v %v", fresh, err)
	}

	// Every evaluated prompt has its greedy completion, in prompt order, in both evaluations.
	examples, _, err := e.EvalExamples()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 2} {
		ev, err := e.LoadEval(k)
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.PerPrompt) != len(examples) || len(ev.Examples) != 0 {
			t.Fatalf("phase %d: %d records for %d prompts, %d legacy examples", k, len(ev.PerPrompt), len(examples), len(ev.Examples))
		}
		nonEmpty := 0
		for i, o := range ev.PerPrompt {
			if o.Prompt != examples[i].Prompt || o.Reference != examples[i].Reference || o.RefGold == nil || o.RefHeldOut == nil {
				t.Fatalf("phase %d prompt %d: %+v", k, i, o)
			}
			if o.Completion != "" {
				nonEmpty++
			}
			// Every sample is kept with its gold score; their mean is the prompt's sampleGold.
			per := int(max(b.ar.Spec.Evaluator.SamplesPerPrompt, 1))
			if len(o.Samples) != per || len(o.SampleScores) != per || o.SampleGold == nil {
				t.Fatalf("phase %d prompt %d: %d samples, %d scores, want %d", k, i, len(o.Samples), len(o.SampleScores), per)
			}
			mean := 0.0
			for _, g := range o.SampleScores {
				mean += g / float64(per)
			}
			if math.Abs(mean-*o.SampleGold) > 1e-12 {
				t.Fatalf("phase %d prompt %d: sample scores %v, mean %g, sampleGold %g", k, i, o.SampleScores, mean, *o.SampleGold)
			}
		}
		if nonEmpty == 0 {
			t.Fatalf("phase %d: every greedy completion is empty", k)
		}
		unit(fmt.Sprintf("phase %d fluency of samples", k), ev.SampleFluency)
		for name, st := range map[string]*TextStats{"greedy": ev.Greedy, "references": ev.References} {
			if st == nil || st.Texts != len(examples) || st.MeanTokens <= 0 || st.MeanWords <= 0 {
				t.Fatalf("phase %d %s stats: %+v", k, name, st)
			}
			for _, v := range []float64{st.Distinct1, st.Distinct2, st.Fluency} {
				unit(fmt.Sprintf("phase %d %s", k, name), &v)
			}
		}
		// Human references are written English: nearly every word is a dictionary word.
		if ev.References.Fluency < 0.9 {
			t.Fatalf("phase %d: reference fluency %.3f", k, ev.References.Fluency)
		}
	}

	if _, err := e.WriteReport(sums); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(e.WS.Root, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Diagnostics", "fresh-pair accuracy", "| human references |", "| policy after phase 2 |", "| # | prompt | initial model | final policy | human reference |"} {
		if !strings.Contains(string(md), want) {
			t.Fatalf("report.md lacks %q:\n%s", want, md)
		}
	}
	// The side-by-side tables, greedy then sampled (each row the first kept sample of each side):
	// 12 of the 16 prompts, spread from the first to the last.
	_, side, _ := strings.Cut(string(md), "## Sample completions")
	greedy, sampled, ok := strings.Cut(side, "## Sampled completions")
	if !ok {
		t.Fatalf("report.md has no sampled side-by-side:\n%s", md)
	}
	for name, table := range map[string]string{"greedy": greedy, "sampled": sampled} {
		var rows []string
		for _, l := range strings.Split(table, "\n") {
			if strings.HasPrefix(l, "| ") && !strings.HasPrefix(l, "| # ") {
				rows = append(rows, l)
			}
		}
		if len(rows) != 12 || !strings.HasPrefix(rows[0], "| 0 | ") || !strings.HasPrefix(rows[11], "| 15 | ") {
			t.Fatalf("%s side-by-side rows: %q", name, rows)
		}
	}
}
