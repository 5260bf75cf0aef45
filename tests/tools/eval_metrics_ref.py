#!/usr/bin/python3
# tests/tools/eval_metrics_ref.py -- an independent Python implementation of lmforge's eval
# metrics (sacreBLEU corpus BLEU with 13a tokens and 'exp' smoothing, rouge_score's ROUGE-L,
# SQuAD exact match and F1), written from the published definitions. Standard library only.
#
# Usage: eval_metrics_ref.py PAIRS.jsonl  -> prints {"bleu", "bleu_precisions", "bleu_bp",
#        "sys_len", "ref_len", "rouge_l", "exact_match", "f1"} as JSON. PAIRS holds
#        {"prediction": str, "reference": str or [str, ...]} per line.
import collections
import json
import math
import re
import string
import sys

# sacreBLEU's tokenizer_13a + TokenizerRegexp, in order.
_RULES_13A = [
    (re.compile(r'([\{-\~\[-\` -\&\(-\+\:-\@\/])'), r' \1 '),
    (re.compile(r'([^0-9])([\.,])'), r'\1 \2 '),
    (re.compile(r'([\.,])([^0-9])'), r' \1 \2'),
    (re.compile(r'([0-9])(-)'), r'\1 \2 '),
]


def tokenize_13a(line):
    line = line.replace('<skipped>', '').replace('-\n', '').replace('\n', ' ')
    if '&' in line:
        line = line.replace('&quot;', '"').replace('&amp;', '&').replace('&lt;', '<').replace('&gt;', '>')
    line = ' ' + line + ' '
    for pattern, repl in _RULES_13A:
        line = pattern.sub(repl, line)
    return line.split()


def ngrams(tokens, n):
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hyps, refs_per_hyp, order=4):
    correct, total = [0] * order, [0] * order
    sys_len = ref_len = 0
    for hyp, refs in zip(hyps, refs_per_hyp):
        h = tokenize_13a(hyp.rstrip())
        rs = [tokenize_13a(r.rstrip()) for r in refs]
        sys_len += len(h)
        ref_len += min((abs(len(h) - len(r)), len(r)) for r in rs)[1]
        for n in range(1, order + 1):
            best = collections.Counter()
            for r in rs:
                best |= ngrams(r, n)  # max count per n-gram over references
            hc = ngrams(h, n)
            correct[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            total[n - 1] += sum(hc.values())
    precisions = [0.0] * order
    smooth = 1.0
    for n in range(order):
        if total[n] == 0:
            break
        if correct[n] == 0:
            smooth *= 2
            precisions[n] = 100.0 / (smooth * total[n])
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    if not any(correct):
        return 0.0, precisions, bp, sys_len, ref_len
    logs = [math.log(p) if p > 0 else -9999999999 for p in precisions]
    return bp * math.exp(sum(logs) / order), precisions, bp, sys_len, ref_len


def rouge_tokens(text):
    return [t for t in re.split(r'\s+', re.sub(r'[^a-z0-9]+', ' ', text.lower())) if re.match(r'^[a-z0-9]+$', t)]


def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[len(a)][len(b)]


def rouge_l(pred, ref):
    p, r = rouge_tokens(pred), rouge_tokens(ref)
    if not p or not r:
        return 0.0
    common = lcs(r, p)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def normalize(s):
    s = s.lower()
    s = ''.join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r'\b(a|an|the)\b', ' ', s)
    return ' '.join(s.split())


def f1(pred, ref):
    p, g = normalize(pred).split(), normalize(ref).split()
    if not p or not g:
        return float(p == g)
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def main(path):
    preds, refs = [], []
    with open(path, encoding='utf-8') as f:
        for line in f:
            row = json.loads(line)
            preds.append(row['prediction'])
            refs.append(row['reference'] if isinstance(row['reference'], list) else [row['reference']])
    bleu, precisions, bp, sys_len, ref_len = corpus_bleu(preds, refs)
    n = len(preds)
    print(json.dumps({
        'bleu': bleu, 'bleu_precisions': precisions, 'bleu_bp': bp, 'sys_len': sys_len, 'ref_len': ref_len,
        'rouge_l': sum(rouge_l(p, r[0]) for p, r in zip(preds, refs)) / n,
        'exact_match': sum(normalize(p) == normalize(r[0]) for p, r in zip(preds, refs)) / n,
        'f1': sum(f1(p, r[0]) for p, r in zip(preds, refs)) / n,
    }, indent=1))


if __name__ == '__main__':
    main(sys.argv[1])
