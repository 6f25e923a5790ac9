"""A CLIP tokenizer whose vocabulary is the kit's caption words.

SD 1.5 uses CLIP's byte-level BPE with 49,408 tokens. Ours is the same algorithm and file format
(vocab.json + merges.txt, loaded by transformers' CLIPTokenizer) with merges learnt from the
kit's few dozen words, so each caption word, held-out and rare ones included, is one token.
"""

from __future__ import annotations

from collections import Counter

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lorakit.data import CAPTION_WORDS

MAX_LENGTH = 16  # tokens per prompt, start and end tokens included (SD 1.5: 77)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def learn_bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that make every word a single end-of-word token (Sennrich et al. 2016)."""
    corpus = [tuple(w[:-1]) + (w[-1] + "</w>",) for w in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter(p for sym in corpus for p in zip(sym, sym[1:]))
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, ties broken alphabetically
        merges.append(best)
        corpus = [_merge(sym, best) for sym in corpus]


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def clip_vocab(words: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-format vocabulary and merges for `words` (default: the kit's caption words).

    As in CLIP: the 256 byte symbols, the same with the end-of-word mark, one token per merge,
    then the start and end tokens.
    """
    merges = learn_bpe_merges(list(words or CAPTION_WORDS))
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}, merges


def build_tokenizer(words: list[str] | None = None, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """A CLIPTokenizer over the kit's words, padded to `max_length` tokens (saved with save_pretrained)."""
    vocab, merges = clip_vocab(words)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=max_length,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,  # as in SD 1.5's tokenizer
    )
