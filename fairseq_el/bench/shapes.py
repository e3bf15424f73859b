"""Named model shapes and the paper's benchmark configurations (presets).

A shape names a stock fairseq architecture plus the vocabulary size, so a model of that size can
be built with seeded random weights (nothing downloaded). Presets are the paper's settings
(Yan et al., 2021, Sec. 4): task shape, source length, beam and output length.
"""

from dataclasses import dataclass, field, replace
from typing import Dict, List, Sequence, Tuple

from fairseq_el.testing import tiny_args

TINY_LM = (
    "--decoder-layers",
    "2",
    "--decoder-embed-dim",
    "16",
    "--decoder-ffn-embed-dim",
    "32",
    "--decoder-attention-heads",
    "4",
    "--dropout",
    "0",
    "--attention-dropout",
    "0",
)


@dataclass(frozen=True)
class Shape:
    """A model size: fairseq ``arch``, ``kind`` (``seq2seq`` or ``lm``) and vocabulary size."""

    name: str
    arch: str
    kind: str
    vocab: int
    extra: Tuple[str, ...] = ()  # fairseq model options on top of the architecture defaults

    @property
    def is_lm(self) -> bool:
        return self.kind == "lm"


# Vocabulary sizes: BART's and GPT-2's own; the SQuAD Transformer uses a BERT-sized one.
SHAPES: Dict[str, Shape] = {
    s.name: s
    for s in [
        Shape("transformer-base", "transformer", "seq2seq", 30522, ("--share-all-embeddings",)),
        Shape(
            "transformer-big",
            "transformer_vaswani_wmt_en_de_big",
            "seq2seq",
            30522,
            ("--share-all-embeddings",),
        ),
        Shape("bart-base", "bart_base", "seq2seq", 50265),
        Shape("bart-large", "bart_large", "seq2seq", 50265),
        # fairseq's transformer_lm_gpt is GPT-2 small (117M); transformer_lm_gpt2_small is 345M
        Shape("gpt2-small", "transformer_lm_gpt", "lm", 50257),
        Shape("gpt2-medium", "transformer_lm_gpt2_small", "lm", 50257),
        # tests and smoke runs: any arch made tiny
        Shape("tiny-transformer", "transformer", "seq2seq", 64, tuple(tiny_args())),
        Shape("tiny-bart", "bart_base", "seq2seq", 64, tuple(tiny_args())),
        Shape("tiny-lm", "transformer_lm_gpt", "lm", 64, TINY_LM),
    ]
}

SEARCHES: Dict[str, Tuple[str, ...]] = {
    "beam": (),
    "greedy": (),  # beam is forced to 1
    "diverse": ("--diverse-beam-groups", "2", "--diverse-beam-strength", "0.5"),
    "sampling": ("--sampling", "--sampling-topk", "10"),
}


@dataclass(frozen=True)
class Config:
    """Everything one benchmark run depends on."""

    shape: str
    src_len: int
    batch: int
    beam: int
    steps: int
    search: str = "beam"
    no_repeat: int = 0
    dtype: str = "fp32"
    device: str = "cpu"
    seed: int = 1
    checkpoint: str = ""
    model_options: Tuple[str, ...] = field(default_factory=tuple)  # "name=value" model overrides

    def __post_init__(self) -> None:
        if self.shape not in SHAPES and not self.checkpoint:
            raise ValueError(f"unknown shape {self.shape!r}; known: {', '.join(SHAPES)}")
        if self.search not in SEARCHES:
            raise ValueError(f"unknown search {self.search!r}; known: {', '.join(SEARCHES)}")
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"dtype must be fp32, bf16 or fp16, not {self.dtype!r}")
        for name, value in (
            ("src_len", self.src_len),
            ("batch", self.batch),
            ("beam", self.beam),
            ("steps", self.steps),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.search == "diverse" and self.beam % 2:
            raise ValueError(
                f"diverse beam search uses 2 groups: beam must be even, not {self.beam}"
            )

    @property
    def hypotheses(self) -> int:
        """Hypotheses per sentence the generator keeps (greedy: 1)."""
        return 1 if self.search == "greedy" else self.beam

    def generation_argv(self, lm: bool = False) -> List[str]:
        """fairseq-generate options that force exactly ``steps`` tokens before the final eos.

        A language model decodes its prompt first (fairseq forces it as prefix tokens, one
        position per step), so its lengths count the prompt too.
        """
        length = str(self.steps + self.src_len if lm else self.steps)
        argv = [
            "--beam",
            str(self.hypotheses),
            "--nbest",
            "1",
            "--max-len-a",
            "0",
            "--max-len-b",
            length,
            "--min-len",
            length,
            "--seed",
            str(self.seed),
            *SEARCHES[self.search],
        ]
        if self.no_repeat:
            argv += ["--no-repeat-ngram-size", str(self.no_repeat)]
        if self.dtype == "fp16":
            argv.append("--fp16")
        return argv

    def describe(self) -> str:
        extra = f", no-repeat {self.no_repeat}" if self.no_repeat else ""
        opts = f", model options {' '.join(self.model_options)}" if self.model_options else ""
        return (
            f"{self.shape}: src {self.src_len}, batch {self.batch}, {self.search} "
            f"{self.hypotheses}, {self.steps} steps{extra}, {self.dtype} on {self.device}{opts}"
        )


@dataclass(frozen=True)
class Preset:
    """One of the paper's configurations; ``steps`` approximates its average output length."""

    name: str
    shape: str
    src_len: int
    beam: int
    steps: int
    batch: int
    no_repeat: int = 0
    note: str = ""

    def config(self, search: str = "beam", **overrides) -> Config:
        base = Config(
            self.shape, self.src_len, self.batch, self.beam, self.steps, search, self.no_repeat
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: Dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "squad-qg",
            "transformer-big",
            512,
            4,
            20,
            32,
            note="SQuAD 1.1 question generation (paper: 270M transformer)",
        ),
        Preset("xsum", "bart-large", 1024, 6, 60, 32, note="XSum with bart.large"),
        Preset(
            "cnndm",
            "bart-large",
            1024,
            4,
            140,
            32,
            no_repeat=3,
            note="CNN/DailyMail with bart.large",
        ),
        Preset("cnndm-gpt2", "gpt2-small", 512, 4, 100, 8, note="GPT-2 small on CNN/DM prompts"),
        Preset(
            "cnndm-gpt2-medium",
            "gpt2-medium",
            512,
            4,
            100,
            8,
            note="GPT-2 medium on CNN/DM prompts",
        ),
    ]
}


def preset_configs(
    name: str, searches: Sequence[str] = ("beam", "greedy", "diverse"), **overrides
) -> List[Config]:
    """The preset's configurations, one per search mode (the paper reports all three)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return [PRESETS[name].config(search, **overrides) for search in searches]
