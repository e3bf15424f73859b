"""GPT-2 (``GPT2LMHeadModel``) -> fairseq ``transformer_lm`` checkpoint and ``dict.txt``.

GPT-2 is a pre-LN decoder with a final layer norm, learned positions, tied input/output
embeddings, unscaled embeddings and the tanh GELU; fairseq's ``transformer_lm`` computes the
same with ``--decoder-normalize-before --decoder-learned-pos --share-decoder-input-output-embed
--no-scale-embedding --activation-fn gelu_accurate``.

Vocabulary: fairseq's index ``j`` is the dictionary's ``j``-th symbol (4 specials, then
``dict.txt`` whose symbols are GPT-2 ids as strings), so embedding rows are permuted.
GPT-2's ``<|endoftext|>`` becomes fairseq's ``</s>``: fairseq's language model starts every
generation from ``</s>`` and ends a line or document with it, which is the role
``<|endoftext|>`` has in GPT-2 (and Hugging Face stops generation on it). fairseq's other
rows (``<s>``, ``<pad>``, ``<unk>``, ``madeupword``s, the ``dict.txt`` symbol of the eos id)
have no GPT-2 counterpart; see :func:`neutral_row` for the value they get.
"""

import functools
from typing import Any, List, Optional, Tuple

import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks.language_modeling import LanguageModelingTask

from fairseq_el.convert.hf_common import (
    ConversionError,
    Converted,
    KeyMap,
    activation,
    check_config,
    check_tied,
    expand,
    identity,
    map_state,
    refuse,
)

# Margin (in logits) by which the extra dictionary rows stay below every GPT-2 token.
EXTRA_ROW_MARGIN = 100.0

# fairseq's stock names for GPT-2's sizes: (embed dim, layers, heads, ffn) -> arch. Note that
# fairseq's "gpt2_small" has the size of HF's gpt2-medium, and so on; HF's gpt2 is "gpt".
STOCK_ARCHS = {
    (768, 12, 12, 3072): "transformer_lm_gpt",
    (1024, 24, 16, 4096): "transformer_lm_gpt2_small",
    (1280, 36, 20, 5120): "transformer_lm_gpt2_medium",
    (1600, 48, 25, 6400): "transformer_lm_gpt2_big",
}

# HF config fields whose non-default value fairseq's transformer_lm cannot compute.
REQUIRED = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "layer_norm_epsilon": 1e-5,
}
WHY = {
    "scale_attn_weights": "fairseq always scales attention scores by 1/sqrt(head_dim)",
    "scale_attn_by_inverse_layer_idx": "fairseq has no per-layer attention scaling",
    "reorder_and_upcast_attn": "fairseq has no reordered, upcast attention",
    "add_cross_attention": "transformer_lm has no encoder attention",
    "tie_word_embeddings": "untied input/output embeddings are not supported by this converter",
    "layer_norm_epsilon": "fairseq's LayerNorm uses eps 1e-5",
}


def conv1d(t: torch.Tensor) -> torch.Tensor:
    """HF ``Conv1D`` weights are (in, out); fairseq's ``nn.Linear`` wants (out, in)."""
    return t.t() if t.dim() == 2 else t


def qkv(part: int, t: torch.Tensor) -> torch.Tensor:
    """Part ``part`` (q, k, v) of GPT-2's fused ``c_attn`` weight or bias."""
    return conv1d(t.chunk(3, dim=-1)[part])


_Q, _K, _V = (functools.partial(qkv, i) for i in range(3))

LAYER_KEYS = {
    "decoder.layers.{}.self_attn.q_proj.weight": ("transformer.h.{}.attn.c_attn.weight", _Q),
    "decoder.layers.{}.self_attn.k_proj.weight": ("transformer.h.{}.attn.c_attn.weight", _K),
    "decoder.layers.{}.self_attn.v_proj.weight": ("transformer.h.{}.attn.c_attn.weight", _V),
    "decoder.layers.{}.self_attn.q_proj.bias": ("transformer.h.{}.attn.c_attn.bias", _Q),
    "decoder.layers.{}.self_attn.k_proj.bias": ("transformer.h.{}.attn.c_attn.bias", _K),
    "decoder.layers.{}.self_attn.v_proj.bias": ("transformer.h.{}.attn.c_attn.bias", _V),
    "decoder.layers.{}.self_attn.out_proj.weight": ("transformer.h.{}.attn.c_proj.weight", conv1d),
    "decoder.layers.{}.self_attn.out_proj.bias": ("transformer.h.{}.attn.c_proj.bias", identity),
    "decoder.layers.{}.self_attn_layer_norm.weight": ("transformer.h.{}.ln_1.weight", identity),
    "decoder.layers.{}.self_attn_layer_norm.bias": ("transformer.h.{}.ln_1.bias", identity),
    "decoder.layers.{}.fc1.weight": ("transformer.h.{}.mlp.c_fc.weight", conv1d),
    "decoder.layers.{}.fc1.bias": ("transformer.h.{}.mlp.c_fc.bias", identity),
    "decoder.layers.{}.fc2.weight": ("transformer.h.{}.mlp.c_proj.weight", conv1d),
    "decoder.layers.{}.fc2.bias": ("transformer.h.{}.mlp.c_proj.bias", identity),
    "decoder.layers.{}.final_layer_norm.weight": ("transformer.h.{}.ln_2.weight", identity),
    "decoder.layers.{}.final_layer_norm.bias": ("transformer.h.{}.ln_2.bias", identity),
}
FINAL_KEYS = {
    "decoder.layer_norm.weight": ("transformer.ln_f.weight", identity),
    "decoder.layer_norm.bias": ("transformer.ln_f.bias", identity),
}


def check_gpt2_config(config: Any) -> None:
    """Refuse a GPT-2 config that fairseq's transformer_lm cannot represent, naming the field."""
    if config.model_type != "gpt2":
        raise refuse("model_type", config.model_type, "this converter reads GPT-2 only")
    activation(config)
    check_config(config, REQUIRED, WHY)
    eos = config.eos_token_id
    if not isinstance(eos, int) or not 0 <= eos < config.vocab_size:
        raise refuse("eos_token_id", eos, "GPT-2's <|endoftext|> id is needed for fairseq's </s>")


def arch_for_dims(dims: Tuple[int, int, int, int]) -> Optional[str]:
    """fairseq's stock transformer_lm architecture of these (dim, layers, heads, ffn), if any."""
    return STOCK_ARCHS.get(dims)


def fairseq_lm_args(config: Any, data: str = "<none>") -> Any:
    """fairseq ``transformer_lm`` training arguments for ``config``, through fairseq's parser."""
    ffn = config.n_inner if config.n_inner is not None else 4 * config.n_embd
    dims = (config.n_embd, config.n_layer, config.n_head, ffn)
    # Every size is passed explicitly; the arch only picks fairseq's defaults for the rest
    # (the bare "transformer_lm" name does not get its arguments from fairseq's parser).
    arch = arch_for_dims(dims) or "transformer_lm_gpt"
    argv = [
        data,
        "--task",
        "language_modeling",
        "--arch",
        arch,
        "--decoder-embed-dim",
        str(config.n_embd),
        "--decoder-input-dim",
        str(config.n_embd),
        "--decoder-output-dim",
        str(config.n_embd),
        "--decoder-ffn-embed-dim",
        str(ffn),
        "--decoder-layers",
        str(config.n_layer),
        "--decoder-attention-heads",
        str(config.n_head),
        "--decoder-normalize-before",
        "--decoder-learned-pos",
        "--share-decoder-input-output-embed",
        "--no-scale-embedding",
        "--activation-fn",
        activation(config),
        "--max-target-positions",
        str(config.n_positions),
        "--tokens-per-sample",
        str(config.n_positions),
        "--dropout",
        str(config.resid_pdrop),
        "--attention-dropout",
        str(config.attn_pdrop),
    ]
    args = options.parse_args_and_arch(
        options.get_training_parser(default_task="language_modeling"), argv
    )
    assert args.decoder_normalize_before and not args.no_decoder_final_norm
    return args


def identity_dictionary(vocab_size: int, eos: int) -> Dictionary:
    """A dictionary listing GPT-2 ids in id order (eos is fairseq's own ``</s>``)."""
    dictionary = Dictionary()
    for i in range(vocab_size):
        if i != eos:
            dictionary.add_symbol(str(i), n=0)
    return dictionary


def vocab_map(dictionary: Dictionary, vocab_size: int, eos: int) -> List[Optional[int]]:
    """For each fairseq index, its GPT-2 id, or None for a row GPT-2 has no token for."""
    rows: List[Optional[int]] = [None] * len(dictionary)
    rows[dictionary.eos()] = eos
    seen = {eos}
    for index in range(dictionary.nspecial, len(dictionary)):
        symbol = dictionary[index]
        if not symbol.isdigit():
            continue  # madeupword padding
        token = int(symbol)
        if token >= vocab_size:
            raise ConversionError(
                f"dict.txt symbol {symbol!r} is not a GPT-2 id below vocab_size={vocab_size}: "
                "the dictionary does not belong to this model"
            )
        if token != eos:
            rows[index] = token
            seen.add(token)
    if len(seen) != vocab_size:
        missing = sorted(set(range(vocab_size)) - seen)
        raise ConversionError(f"dict.txt lacks {len(missing)} GPT-2 ids, e.g. {missing[:5]}")
    return rows


def neutral_row(ln_weight: torch.Tensor, ln_bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """An output-embedding row scoring the same logit for every input, far below any token's.

    fairseq's output layer is ``LN(h) @ E.T`` with no bias, so a fairseq row GPT-2 lacks cannot
    simply get -inf. But ``LN(h) = w * z + b`` where ``z`` sums to 0 and has norm < sqrt(d):
    the row ``c / w`` scores ``c * sum(b / w)`` whatever ``h`` is. ``c`` puts that constant
    ``EXTRA_ROW_MARGIN`` below the lowest logit any GPT-2 token can reach, so such a row is
    never generated and leaves the softmax over GPT-2's tokens unchanged in fp32.
    """
    if bool((ln_weight == 0).any()):
        raise refuse("transformer.ln_f.weight", "has zeros", "no input-independent extra row")
    total = float((ln_bias / ln_weight).sum())
    if abs(total) < 1e-6:
        raise refuse(
            "transformer.ln_f.bias",
            "sum(bias/weight)=0",
            "fairseq's extra dictionary rows (<s>, <pad>, <unk>) cannot be kept below every "
            "GPT-2 token (an untrained final layer norm?)",
        )
    # a token's logit is z . (w * row) + b . row >= -sqrt(d) |w * row| - |b . row|
    spread = (out * ln_weight).norm(dim=1).max() * ln_weight.numel() ** 0.5
    floor = -float(spread + (out @ ln_bias).abs().max())
    return ((floor - EXTRA_ROW_MARGIN) / total) / ln_weight


def convert_gpt2(hf_model: Any, dictionary: Optional[Dictionary] = None) -> Converted:
    """Convert a ``GPT2LMHeadModel``; ``dictionary`` is a fairseq GPT-2 dict (default: id order)."""
    config = hf_model.config
    check_gpt2_config(config)
    eos = config.eos_token_id
    hf_state = hf_model.state_dict()
    check_tied(hf_state, "transformer.wte.weight", ["lm_head.weight"])
    if dictionary is None:
        dictionary = identity_dictionary(config.vocab_size, eos)
    rows = vocab_map(dictionary, config.vocab_size, eos)
    wte = hf_state["transformer.wte.weight"].float()
    extra = neutral_row(
        hf_state["transformer.ln_f.weight"].float(), hf_state["transformer.ln_f.bias"].float(), wte
    )

    def vocab(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([extra if r is None else t[r] for r in rows])

    pad_offset = dictionary.pad() + 1  # fairseq's learned positions start at padding_idx + 1

    def positions(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.new_zeros(pad_offset, t.size(1)), t])

    key_map: KeyMap = {
        "decoder.embed_tokens.weight": ("transformer.wte.weight", vocab),
        "decoder.output_projection.weight": ("lm_head.weight", vocab),
        "decoder.embed_positions.weight": ("transformer.wpe.weight", positions),
        **FINAL_KEYS,
    }
    args = fairseq_lm_args(config)
    task = LanguageModelingTask(args, dictionary, output_dictionary=dictionary)
    model = task.build_model(args).eval()
    keys = map_state(model, hf_state, expand(LAYER_KEYS, config.n_layer, key_map))
    extras = [dictionary[i] for i, r in enumerate(rows) if r is None]
    dims = (
        args.decoder_embed_dim,
        args.decoder_layers,
        args.decoder_attention_heads,
        args.decoder_ffn_embed_dim,
    )
    summary = [
        f"GPT-2 -> fairseq transformer_lm (--arch {args.arch}; closest stock arch: "
        f"{arch_for_dims(dims) or 'none, dims differ'})",
        f"dims: embed {dims[0]}, layers {dims[1]}, heads {dims[2]}, ffn {dims[3]}, "
        f"max positions {args.max_target_positions}, activation {args.activation_fn}",
        f"{len(keys)} fairseq tensors from {len(hf_state)} Hugging Face tensors",
        f"vocabulary: {config.vocab_size} GPT-2 ids -> {len(dictionary)} fairseq rows; "
        f"<|endoftext|> ({eos}) -> </s>; {len(extras)} rows without a GPT-2 token "
        f"({', '.join(extras[:6])}{' ...' if len(extras) > 6 else ''}) score a constant logit "
        f"below every GPT-2 token",
    ]
    return Converted(model, args, dictionary, ("dict.txt",), summary, task)
