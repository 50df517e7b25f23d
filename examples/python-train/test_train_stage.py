"""Unit tests of the example train stage: python3 -m unittest discover -s examples/python-train
(run by examples/python-train/example_test.go). Expected values are computed by hand in the
comments, not by the code under test."""
import json
import math
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import adamw  # noqa: E402
import gorand  # noqa: E402
import losses  # noqa: E402
import member  # noqa: E402
import runspec  # noqa: E402
import safetensors_io  # noqa: E402

torch.set_num_threads(1)
T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


class LossTest(unittest.TestCase):
    # Two pairs, beta = 0.1:
    #   pair 1: pc -10, pr -12, rc -11, rr -11 -> h = (-10+11) - (-12+11) = 2
    #   pair 2: pc -5,  pr -4,  rc -5,  rr -5  -> h = 0 - 1 = -1
    pc, pr, rc, rr = T(-10, -5), T(-12, -4), T(-11, -5), T(-11, -5)

    def test_dpo(self):
        # softplus(-0.2) = ln(1 + e^-0.2) = ln(1.8187307531) = 0.5981388693
        # softplus(+0.1) = ln(1 + e^0.1)  = ln(2.1051709181) = 0.7443966600
        per = losses.per_pair("dpo", 0.1, self.pc, self.pr, self.rc, self.rr)
        self.assertAlmostEqual(per[0].item(), 0.5981388693, places=9)
        self.assertAlmostEqual(per[1].item(), 0.7443966600, places=9)
        self.assertAlmostEqual(losses.mean_loss("dpo", 0.1, self.pc, self.pr, self.rc, self.rr).item(), 0.6712677647, places=9)

    def test_ipo(self):
        # (h - 1/(2 beta))^2 = (2 - 5)^2 = 9 and (-1 - 5)^2 = 36; mean 22.5
        per = losses.per_pair("ipo", 0.1, self.pc, self.pr, self.rc, self.rr)
        self.assertEqual(per.tolist(), [9.0, 36.0])
        self.assertEqual(losses.mean_loss("ipo", 0.1, self.pc, self.pr, self.rc, self.rr).item(), 22.5)

    def test_slic(self):
        # max(0, 1 - 0.1*2) = 0.8 and max(0, 1 + 0.1) = 1.1; with h = 20: max(0, 1 - 2) = 0
        per = losses.per_pair("slic", 0.1, self.pc, self.pr, self.rc, self.rr)
        self.assertAlmostEqual(per[0].item(), 0.8, places=12)
        self.assertAlmostEqual(per[1].item(), 1.1, places=12)
        self.assertEqual(losses.per_pair("slic", 0.1, T(10), T(-10), T(0), T(0)).item(), 0.0)

    def test_dpo_gradient(self):
        # d softplus(-beta h)/d pc = -beta * sigmoid(-beta h); pair 1: -0.1 * sigmoid(-0.2) = -0.1 * 0.4501660027
        pc = self.pc.clone().requires_grad_(True)
        losses.mean_loss("dpo", 0.1, pc, self.pr, self.rc, self.rr).backward()
        self.assertAlmostEqual(pc.grad[0].item(), -0.1 * 0.4501660027 / 2, places=10)

    def test_dpo_extreme_margins(self):
        # beta h = 1e4: softplus(-1e4) = 0 (to double precision), softplus(1e4) = 1e4, no overflow.
        self.assertEqual(losses.per_pair("dpo", 1.0, T(0), T(-1e4), T(0), T(0)).item(), 0.0)
        self.assertEqual(losses.per_pair("dpo", 1.0, T(-1e4), T(0), T(0), T(0)).item(), 1e4)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "beta"):
            losses.per_pair("dpo", 0.0, self.pc, self.pr, self.rc, self.rr)
        with self.assertRaisesRegex(ValueError, "unknown loss"):
            losses.per_pair("kto", 0.1, self.pc, self.pr, self.rc, self.rr)

    def test_diagnostics(self):
        # rewards 0.1*(pc-rc): chosen 0.1, 0; rejected 0.1*(pr-rr): -0.1, 0.1 -> accuracy 1/2,
        # margin mean(0.2, -0.1) = 0.05
        acc, margin = losses.diagnostics(0.1, self.pc, self.pr, self.rc, self.rr)
        self.assertEqual(acc, 0.5)
        self.assertAlmostEqual(margin, 0.05, places=12)
        # KL on the sampler's samples: mean((-1 - -3), (-2 - -2)) = 1
        self.assertEqual(losses.kl_estimate(T(-1, -2), T(-3, -2)), 1.0)


class AdamWTest(unittest.TestCase):
    def test_first_steps(self):
        # Step 1: g = 0.5 (norm 0.5 <= 1, no clipping), lr = 0.1 * (10-0)/10 = 0.1,
        # m = 0.05, v = 0.00025, m/(1-0.9) = 0.5, v/(1-0.999) = 0.25, update 0.1*0.5/(0.5+1e-8).
        opt = adamw.AdamW(lr=0.1, total_steps=10)
        p = {"w": T(1.0)}
        norm, lr = opt.step(p, {"w": T(0.5)})
        self.assertEqual((norm, lr), (0.5, 0.1))
        self.assertAlmostEqual(p["w"].item(), 1 - 0.1 * 0.5 / (0.5 + 1e-8), places=15)
        # Step 2: lr = 0.1 * 9/10 = 0.09; g = 0.5 again: m = 0.095, v = 0.00049975,
        # mhat = 0.095/0.19 = 0.5, vhat = 0.00049975/0.001999 = 0.25 -> update 0.09*0.5/(0.5+1e-8).
        before = p["w"].item()
        _, lr = opt.step(p, {"w": T(0.5)})
        self.assertAlmostEqual(lr, 0.09, places=15)
        self.assertAlmostEqual(p["w"].item(), before - 0.09 * 0.5 / (0.5 + 1e-8), places=12)

    def test_clipping(self):
        # g = (3, 4): norm 5 > 1 -> scaled to (0.6, 0.8); the first Adam step is lr*g/|g| per value.
        opt = adamw.AdamW(lr=0.1, total_steps=10)
        p = {"a": T(0.0), "b": T(0.0)}
        norm, _ = opt.step(p, {"a": T(3.0), "b": T(4.0)})
        self.assertEqual(norm, 5.0)
        self.assertAlmostEqual(opt.m["a"].item(), 0.1 * 0.6, places=15)
        self.assertAlmostEqual(opt.m["b"].item(), 0.1 * 0.8, places=15)
        self.assertAlmostEqual(p["a"].item(), -0.1 * 0.6 / (0.6 + 1e-8), places=12)

    def test_schedule_ends_at_zero(self):
        opt = adamw.AdamW(lr=1.0, total_steps=4)
        self.assertEqual([opt.lr_at(s) for s in range(6)], [1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_and_layout(self):
        tensors = {"b": T(1.5, -2.0).reshape(2, 1), "a": T(3.25)}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.safetensors")
            safetensors_io.write(path, tensors, {"rank": "2"}, torch.float32)
            back, meta = safetensors_io.read(path)
            with open(path, "rb") as f:
                raw = f.read()
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)
            self.assertEqual([n for n in os.listdir(d)], ["x.safetensors"])  # no temp file left
        self.assertEqual(meta, {"rank": "2"})
        self.assertEqual(back["b"].tolist(), [[1.5], [-2.0]])
        self.assertEqual(back["a"].tolist(), [3.25])
        # The layout by hand: u64 header length (a multiple of 8), the JSON header, then
        # a's 4 bytes then b's 8, contiguous, little-endian float32.
        (n,) = struct.unpack("<Q", raw[:8])
        self.assertEqual(n % 8, 0)
        header = json.loads(raw[8:8 + n])
        self.assertEqual(header["a"], {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})
        self.assertEqual(header["b"], {"dtype": "F32", "shape": [2, 1], "data_offsets": [4, 12]})
        self.assertEqual(raw[8 + n:], struct.pack("<3f", 3.25, 1.5, -2.0))

    def test_f64_and_truncated(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.safetensors")
            safetensors_io.write(path, {"v": T(1 / 3)}, None, torch.float64)
            self.assertEqual(safetensors_io.read(path)[0]["v"].item(), 1 / 3)  # lossless
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) - 1)
            with self.assertRaisesRegex(ValueError, "data_offsets"):
                safetensors_io.read(path)


class GoRandTest(unittest.TestCase):
    def test_perm_matches_go(self):
        # Go: rand.New(rand.NewPCG(1, 2)).Perm(10) (example_test.go checks more seeds live).
        self.assertEqual(gorand.PCG(1, 2).perm(10), [4, 2, 3, 6, 9, 1, 8, 0, 5, 7])

    def test_stream_seed_is_64_bit(self):
        s = gorand.stream_seed(1, "order", 2)
        self.assertTrue(0 <= s < 2 ** 64)
        self.assertNotEqual(s, gorand.stream_seed(1, "order", 1))


class PairAccuracyTest(unittest.TestCase):
    def test_length_balanced(self):
        # pipeline.lengthBalancedAccuracy's cases: a length ranker scores 0.5 whatever the share of
        # chosen-longer pairs; equal lengths are left out; ties in the margin count 1/2.
        lb = member.length_balanced
        self.assertEqual(lb([1, 1, 1, -1], [5, 5, 5, 2], [2, 2, 2, 5]), 0.5)  # ranks by length: 1.0 and 0.0
        self.assertEqual(lb([1, -1, 0, 1], [5, 2, 5, 3], [2, 5, 2, 3]), (0.75 + 0.0) / 2)
        self.assertIsNone(lb([1, 1], [5, 5], [2, 2]))  # no chosen-shorter pair
        self.assertIsNone(lb([1], [3], [3]))


class RunSpecTest(unittest.TestCase):
    def load(self, loss):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "run.yaml")
            with open(path, "w") as f:
                f.write("kind: AlignmentRun\nmetadata: {name: r}\nspec: {budget: {pairs: 16}, loss: %s}\n" % loss)
            return runspec.load(path)

    def test_length_alpha_refused(self):
        # This example trains plain DPO/IPO/SLiC: a run asking for R-DPO's term must not train
        # silently without it.
        with self.assertRaisesRegex(ValueError, "spec.loss.lengthAlpha"):
            self.load('{lengthAlpha: "0.2"}')
        self.assertEqual(self.load('{lengthAlpha: "0", type: IPO}').loss, "ipo")


if __name__ == "__main__":
    unittest.main()
