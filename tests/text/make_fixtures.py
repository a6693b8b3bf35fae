"""Regenerates the text fixtures: three Hugging Face `tokenizer.json` files (one per model
family tokenizers uses: WordPiece, byte-level BPE, Unigram), trained offline on a seeded
synthetic corpus, and `echo_tokens.onnx`, a model that returns the token ids and attention
mask it is given (so a test sees exactly what the component's tokenizer produced).

    python tests/text/make_fixtures.py   # needs tokenizers and onnx (tests/python/requirements.txt)

The vocabularies stay under 1,000 entries: the zoo's BERT classifier
(tests/zoo/models/bert_classifier.onnx) embeds 1,000 token ids and 128 positions.
"""

import random
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = Path(__file__).parent
WORDS = (
    "the model serves predictions from a sandbox while the host counts fuel and memory "
    "un café très élevé naïve façade jalapeño Zürich São Paulo crème brûlée "
    "good bad great terrible fine excellent awful service food price quality "
    "inference component tokenizer attention encoder decoder batch sequence label"
).split()


def corpus(seed: int, lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words.append(rng.choice(["!", "?", ".", ",", "..."]))
        if rng.random() < 0.2:
            words[0] = words[0].capitalize()
        out.append(" ".join(words))
    return out


def wordpiece() -> Tokenizer:
    """BERT-style: lowercase, strip accents, [CLS] A [SEP], truncation at 24, pad right."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tok.train_from_iterator(corpus(1), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    tok.enable_truncation(max_length=24)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    return tok


def byte_level_bpe() -> Tokenizer:
    """RoBERTa-style: byte-level BPE, <s> A </s>, truncation at 20, pads with <pad> (id 1)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(2), trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    tok.enable_truncation(max_length=20)
    tok.enable_padding(pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
    return tok


def unigram() -> Tokenizer:
    """T5/ALBERT-style: NFKC, Metaspace, Unigram, A </s>, no padding section (the component
    pads with id 0), truncation at 16 from the left."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(corpus(3), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    tok.enable_truncation(max_length=16, direction="left")
    return tok


def echo_model() -> onnx.ModelProto:
    """input_ids, attention_mask, token_type_ids [batch, sequence] int64 -> the same three."""
    names = ["input_ids", "attention_mask", "token_type_ids"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names]
    outputs = [helper.make_tensor_value_info(f"{n}_seen", TensorProto.INT64, ["batch", "sequence"]) for n in names]
    nodes = [helper.make_node("Identity", [n], [f"{n}_seen"]) for n in names]
    graph = helper.make_graph(nodes, "echo_tokens", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeinfer-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    for name, make in [("wordpiece", wordpiece), ("bpe", byte_level_bpe), ("unigram", unigram)]:
        make().save(str(HERE / f"{name}.tokenizer.json"))
    onnx.save(echo_model(), HERE / "echo_tokens.onnx")
    (HERE / "sentiment.labels").write_text("negative\nneutral\npositive\n")


if __name__ == "__main__":
    main()
