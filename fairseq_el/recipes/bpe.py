"""GPT-2 BPE from local files.

fairseq's ``--bpe gpt2`` downloads ``encoder.json`` and ``vocab.bpe`` by default; reading them
from disk with ``get_encoder`` keeps data preparation and generation offline.
"""

from pathlib import Path
from typing import List

from fairseq.data.encoders.gpt2_bpe_utils import Encoder, get_encoder

from fairseq_el.paths import BPE_DIR
from fairseq_el.recipes.paths import require_file


class GPT2BPE:
    """Text <-> GPT-2 BPE ids, as the space-separated strings that the BART dict.txt holds."""

    def __init__(self, bpe_dir: Path = BPE_DIR) -> None:
        self.bpe_dir = Path(bpe_dir)
        self.encoder_json = require_file(self.bpe_dir / "encoder.json", "GPT-2 encoder.json")
        self.vocab_bpe = require_file(self.bpe_dir / "vocab.bpe", "GPT-2 vocab.bpe")
        self._encoder: Encoder = get_encoder(str(self.encoder_json), str(self.vocab_bpe))

    def encode(self, text: str) -> List[str]:
        """BPE ids of ``text`` as strings (the symbols of the BART dictionary)."""
        return [str(i) for i in self._encoder.encode(text)]

    def decode(self, tokens: List[str]) -> str:
        """Inverse of :meth:`encode`."""
        return self._encoder.decode([int(t) for t in tokens])

    def fairseq_args(self) -> List[str]:
        """fairseq-generate options that make ``--bpe gpt2`` read these local files."""
        return [
            "--bpe",
            "gpt2",
            "--gpt2-encoder-json",
            str(self.encoder_json),
            "--gpt2-vocab-bpe",
            str(self.vocab_bpe),
        ]
