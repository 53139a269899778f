"""Independent reference for the tokenizer tests (tests/MLNetFinetune.Tests/Tokenization).

Hugging Face's `tokenizers` package is not available here, so its byte-level BPE pipeline is written out below from
what the library does (tokenizer.json's added_tokens, normalizer, pre_tokenizer, BPE model, post_processor), with the
`regex` module (Debian python3-regex), which matches code points with Unicode properties as the library's Oniguruma does.
SentencePiece is Google's own library (Debian python3-sentencepiece).

    tokenizer_reference.py <jobs.json>

jobs.json is a list; each job is one of
    {"bpe": "<tokenizer.json>", "texts": [...]}
        -> {"ids": [[...] per text], "ids_with_special": [[...] per text]}    (encode, add_special_tokens False / True)
    {"bpe": "<tokenizer.json>", "texts": [...], "ignore_merges": false}
        -> the same, with the file's ignore_merges overridden
    {"sentencepiece_train": "<corpus.txt>", "model": "<out.model>", "vocab_size": n, "model_type": "bpe"}
        -> {}                                                                 (byte fallback and Llama 2's other settings)
    {"sentencepiece": "<model>", "texts": [...]}
        -> {"ids": [[...] per text], "bos": id, "eos": id}
and the output, on stdout, is the list of results.
"""
import json
import sys
import unicodedata

import regex


def bytes_to_unicode():
    """GPT-2's table: printable Latin-1 bytes stand for themselves, the others for U+0100 onwards."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHAR = bytes_to_unicode()
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def split_isolated(text, pattern):
    """The library's Split with behavior Isolated: every match is a piece, and so is the text between matches."""
    pieces, end = [], 0
    for match in pattern.finditer(text):
        if match.start() == match.end():
            continue
        if match.start() > end:
            pieces.append(text[end:match.start()])
        pieces.append(match.group())
        end = match.end()
    if end < len(text):
        pieces.append(text[end:])
    return pieces


def split_digits(text):
    """Digits(individual_digits=True): each numeric character (Rust's char::is_numeric: N*) is a piece of its own."""
    pieces, run = [], ""
    for c in text:
        if unicodedata.category(c).startswith("N"):
            if run:
                pieces.append(run)
            pieces.append(c)
            run = ""
        else:
            run += c
    if run:
        pieces.append(run)
    return pieces


def pre_tokenizer_steps(spec):
    """The pre-tokenizer as a list of functions piece -> pieces, applied in turn to every piece (a Sequence)."""
    steps = spec["pretokenizers"] if spec["type"] == "Sequence" else [spec]
    functions = []
    for step in steps:
        kind = step["type"]
        if kind == "ByteLevel":
            assert not step.get("add_prefix_space", False)
            if step.get("use_regex", True):
                functions.append(lambda piece: split_isolated(piece, GPT2_PATTERN))
        elif kind == "Split":
            assert step["behavior"] == "Isolated" and not step.get("invert", False)
            pattern = regex.compile(step["pattern"]["Regex"])
            functions.append(lambda piece, pattern=pattern: split_isolated(piece, pattern))
        elif kind == "Digits":
            assert step["individual_digits"]
            functions.append(split_digits)
        else:
            raise ValueError(f"pre-tokenizer {kind} is not in the reference")
    return functions


def template_prefix(spec):
    """Ids a TemplateProcessing single template puts before $A (a Sequence of processors is searched)."""
    if spec is None:
        return []
    if spec["type"] == "Sequence":
        return [i for p in spec["processors"] for i in template_prefix(p)]
    if spec["type"] != "TemplateProcessing":
        return []
    prefix = []
    for item in spec["single"]:
        if "Sequence" in item:
            break
        prefix += spec["special_tokens"][item["SpecialToken"]["id"]]["ids"]
    return prefix


class ByteLevelBpe:
    def __init__(self, path, ignore_merges=None):
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        model = spec["model"]
        assert model["type"] == "BPE" and not model.get("byte_fallback", False)
        self.vocab = model["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.ignore_merges = model.get("ignore_merges", False) if ignore_merges is None else ignore_merges
        self.added = {t["content"]: t["id"] for t in spec.get("added_tokens") or []}
        normalizer = spec.get("normalizer")
        assert normalizer is None or normalizer["type"] == "NFC"
        self.nfc = normalizer is not None
        self.steps = pre_tokenizer_steps(spec["pre_tokenizer"])
        self.prefix = template_prefix(spec.get("post_processor"))

    def split_added(self, text):
        """Added tokens, leftmost then longest first, cut out of the raw text: (is_added, text) segments."""
        segments, start, i = [], 0, 0
        while i < len(text):
            found = max((t for t in self.added if text.startswith(t, i)), key=len, default=None)
            if found is None:
                i += 1
                continue
            if i > start:
                segments.append((False, text[start:i]))
            segments.append((True, found))
            i += len(found)
            start = i
        if start < len(text):
            segments.append((False, text[start:]))
        return segments

    def bpe(self, piece):
        word = "".join(BYTE_CHAR[b] for b in piece.encode("utf-8"))
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        parts = list(word)
        while len(parts) > 1:
            # The lowest-ranked merge among adjacent pairs, leftmost first on a tie.
            candidates = [(self.ranks[(a, b)], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if (a, b) in self.ranks]
            if not candidates:
                break
            _, i = min(candidates)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        ids = []
        for is_added, segment in self.split_added(text):
            if is_added:
                ids.append(self.added[segment])
                continue
            if self.nfc:
                segment = unicodedata.normalize("NFC", segment)
            pieces = [segment]
            for step in self.steps:
                pieces = [p for piece in pieces for p in step(piece)]
            for piece in pieces:
                ids += self.bpe(piece)
        return ids


def run(job):
    if "bpe" in job:
        tokenizer = ByteLevelBpe(job["bpe"], job.get("ignore_merges"))
        ids = [tokenizer.encode(t) for t in job["texts"]]
        return {"ids": ids, "ids_with_special": [tokenizer.prefix + i for i in ids]}
    import sentencepiece
    if "sentencepiece_train" in job:
        # Llama 2's settings, on a small corpus: BPE, bytes for characters the vocabulary lacks, digits one by one,
        # spaces kept as they are, no normalization.
        sentencepiece.SentencePieceTrainer.train(
            input=job["sentencepiece_train"], model_prefix=job["model"][:-len(".model")], model_type=job.get("model_type", "bpe"),
            vocab_size=job["vocab_size"], byte_fallback=True, split_digits=True, add_dummy_prefix=True,
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, normalization_rule_name="identity",
            character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
        return {}
    processor = sentencepiece.SentencePieceProcessor(model_file=job["sentencepiece"])
    return {"ids": [processor.encode(t) for t in job["texts"]], "bos": processor.bos_id(), "eos": processor.eos_id()}


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        jobs = json.load(f)
    json.dump([run(job) for job in jobs], sys.stdout)
