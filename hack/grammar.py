#!/usr/bin/python3
"""Grammaticality of a run's greedy completions under CMU's Link Grammar parser.

A measurement tool, not part of the product (like hack/golden.py and python3-torch): it needs
Debian's python3-link-grammar and link-grammar-dictionaries-en
(apt-get install python3-link-grammar link-grammar-dictionaries-en).

A text counts as grammatical when the parser finds, for every sentence of prompt + completion
(split after . ! or ? followed by a space), a complete linkage with no null links (no word left
out), the strictest setting; the parser takes one sentence at a time, and responses are a
sentence or two. The human reference of the same
prompt is parsed the same way, so the ratio greedy/references says how close the model's text is
to what people wrote; informal review English fails the parser too, which is why the references
are the yardstick and not 100%.

Usage: hack/grammar.py RUN_FOLDER_OR_RESULT_JSON ...
  A run folder (workspace/quickstart) prints every phase-k/eval/result.json in it.
  --json prints one JSON object per result instead of a table.
"""
import glob
import json
import os
import re
import statistics
import sys

import linkgrammar as lg

MAX_PARSE_SECONDS = 5


def parser():
    options = lg.ParseOptions(min_null_count=0, max_null_count=0, linkage_limit=1,
                              max_parse_time=MAX_PARSE_SECONDS, verbosity=0)
    # The dictionary asks for en_US.UTF-8, which minimal images lack; the C library then prints
    # a debug line on stdout, so the load runs with stdout pointed at stderr.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        dictionary = lg.Dictionary("en")
    finally:
        os.dup2(saved, 1)
        os.close(saved)

    def grammatical(text):
        sentences = split_sentences(text)
        return bool(sentences) and all(
            len(lg.Sentence(s, dictionary, options).parse()) > 0 for s in sentences)

    return grammatical


def split_sentences(text):
    """The sentences of text: cut after . ! or ? (and any closing quotes or brackets) followed by
    whitespace; blank pieces dropped."""
    return [s for s in re.split(r'(?:(?<=[.!?])|(?<=[.!?]["\')\]]))\s+', text.strip()) if s.strip()]


def results(paths):
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "phase-*", "eval", "result.json")),
                           key=lambda p: int(p.split("phase-")[-1].split(os.sep)[0]))
            if not found:
                sys.exit(f"{path}: no phase-*/eval/result.json in it (is it a finished run folder?)")
            yield from found
        else:
            yield path


def measure(path, grammatical):
    with open(path) as f:
        result = json.load(f)
    per_prompt = result.get("perPrompt")
    if not per_prompt:
        sys.exit(f"{path}: no perPrompt records (an eval result written before every greedy "
                 "completion was kept; re-run its eval stage)")
    greedy = [grammatical(p["prompt"] + p.get("completion", "")) for p in per_prompt]
    refs = [grammatical(p["prompt"] + p.get("reference", "")) for p in per_prompt]
    words = [len(p.get("completion", "").split()) for p in per_prompt]
    n = len(per_prompt)
    return {
        "result": path,
        "phase": result.get("phase"),
        "prompts": n,
        "greedyGrammatical": sum(greedy) / n,
        "referencesGrammatical": sum(refs) / n,
        "ratio": sum(greedy) / sum(refs) if sum(refs) else float("nan"),
        "medianWords": statistics.median(words),
    }


def main(argv):
    as_json = "--json" in argv
    paths = [a for a in argv if a != "--json"]
    if not paths:
        sys.exit(__doc__)
    grammatical = parser()
    if not as_json:
        print("| result | phase | prompts | greedy grammatical | references grammatical | ratio | median words |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    for path in results(paths):
        m = measure(path, grammatical)
        if as_json:
            print(json.dumps(m))
        else:
            print(f"| {m['result']} | {m['phase']} | {m['prompts']} | {m['greedyGrammatical']:.3f} | "
                  f"{m['referencesGrammatical']:.3f} | {m['ratio']:.2f} | {m['medianWords']:g} |")


if __name__ == "__main__":
    main(sys.argv[1:])
