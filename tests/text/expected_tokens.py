"""Prints what the Python `tokenizers` library makes of a corpus, as the component pads it.

    python3 tests/text/expected_tokens.py TOKENIZER.json < corpus.json

Output: {"input_ids": [[...]], "attention_mask": [[...]], "token_type_ids": [[...]]}, the
batch padded as the file says, or (no padding section) to the longest with id 0, which is
what `edgeinfer compile --tokenizer` does.
"""

import json
import sys

from tokenizers import Tokenizer

tokenizer = Tokenizer.from_file(sys.argv[1])
if tokenizer.padding is None:
    tokenizer.enable_padding(pad_id=0, pad_token=tokenizer.id_to_token(0) or "")
encodings = tokenizer.encode_batch(json.load(sys.stdin))
json.dump(
    {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    },
    sys.stdout,
)
