"""BART (``BartForConditionalGeneration``) -> fairseq ``bart`` checkpoint and dictionaries.

Hugging Face's BART was converted from fairseq, so ids are fairseq indices (0..3 are
``<s> <pad> </s> <unk>``, then fairseq's GPT-2 ``dict.txt``, then ``<mask>``) and the layers
are named alike: the map is mostly a prefix change. ``BartLearnedPositionalEmbedding``'s
offset 2 is fairseq's ``padding_idx + 1``, so position tables copy row for row. The checkpoint
uses fairseq's ``translation`` task (source -> target), as fairseq's fine-tuned BART does.
"""

from typing import Any, Optional

from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationTask

from fairseq_el.convert.fairseq_inputs import translation_args
from fairseq_el.convert.hf_common import (
    ConversionError,
    Converted,
    activation,
    check_config,
    check_tied,
    expand,
    identity,
    map_state,
    refuse,
)

# (d_model, encoder/decoder layers, heads, ffn) -> fairseq's stock BART architecture.
STOCK_ARCHS = {(768, 6, 12, 3072): "bart_base", (1024, 12, 16, 4096): "bart_large"}

# Fields fairseq's BART cannot follow: old HF BART/mBART switches (pre-LN, a final layer
# norm, sinusoidal positions, a logits bias) and special ids other than fairseq's own.
REQUIRED = {
    "normalize_before": False,
    "add_final_layer_norm": False,
    "static_position_embeddings": False,
    "add_bias_logits": False,
    "tie_word_embeddings": True,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
}
WHY = {
    "normalize_before": "fairseq's bart is post-LN (pre-LN mBART-style configs are refused)",
    "add_final_layer_norm": "fairseq's bart has no final encoder/decoder layer norm",
    "static_position_embeddings": "fairseq's bart uses learned positions",
    "add_bias_logits": "fairseq's output projection has no bias",
    "tie_word_embeddings": "fairseq's bart shares all embeddings",
    "bos_token_id": "fairseq's dictionary has <s> at 0",
    "pad_token_id": "fairseq's dictionary has <pad> at 1",
    "eos_token_id": "fairseq's dictionary has </s> at 2",
    "decoder_start_token_id": "fairseq starts decoding from </s> (2)",
}

_SELF = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "self_attn_layer_norm",
    "fc1",
    "fc2",
    "final_layer_norm",
]
_CROSS = [
    "encoder_attn.q_proj",
    "encoder_attn.k_proj",
    "encoder_attn.v_proj",
    "encoder_attn.out_proj",
    "encoder_attn_layer_norm",
]
_LAYER = {f"{part}.{p}": (f"{part}.{p}", identity) for part in _SELF for p in ("weight", "bias")}
_CROSS_LAYER = {
    f"{part}.{p}": (f"{part}.{p}", identity) for part in _CROSS for p in ("weight", "bias")
}
ENCODER_LAYER_KEYS = {
    f"encoder.layers.{{}}.{k}": (f"model.encoder.layers.{{}}.{h}", fn)
    for k, (h, fn) in _LAYER.items()
}
DECODER_LAYER_KEYS = {
    f"decoder.layers.{{}}.{k}": (f"model.decoder.layers.{{}}.{h}", fn)
    for k, (h, fn) in {**_LAYER, **_CROSS_LAYER}.items()
}
TOP_KEYS = {
    f"{side}.{key}": (f"model.{side}.{key}", identity)
    for side in ("encoder", "decoder")
    for key in [
        "embed_tokens.weight",
        "embed_positions.weight",
        "layernorm_embedding.weight",
        "layernorm_embedding.bias",
    ]
}
# Generation settings HF keeps with the model; fairseq takes them as fairseq-generate options.
GENERATION = (
    "forced_bos_token_id",
    "no_repeat_ngram_size",
    "num_beams",
    "length_penalty",
    "min_length",
    "max_length",
)
TOP_KEYS["decoder.output_projection.weight"] = ("lm_head.weight", identity)


def check_bart_config(config: Any) -> None:
    """Refuse a BART config that fairseq's bart cannot represent, naming the field."""
    if config.model_type != "bart":
        raise refuse(
            "model_type", config.model_type, "this converter reads BART only (mBART is pre-LN)"
        )
    activation(config)
    check_config(config, REQUIRED, WHY)


def bart_dictionary(symbols: Dictionary, vocab_size: int) -> Dictionary:
    """fairseq's BART dictionary: ``symbols`` (a fairseq dict.txt) plus ``<mask>`` if it fits."""
    if len(symbols) == vocab_size - 1 and "<mask>" not in symbols:
        symbols.add_symbol("<mask>", n=0)
    if len(symbols) != vocab_size:
        raise refuse(
            "vocab_size", vocab_size, f"the dictionary has {len(symbols)} symbols (with specials)"
        )
    return symbols


def bart_args(config: Any, data: str = "<none>") -> Any:
    """fairseq ``bart`` arguments for ``config`` (translation task), through fairseq's parser."""
    dims = (
        config.d_model,
        config.encoder_layers,
        config.encoder_attention_heads,
        config.encoder_ffn_dim,
    )
    decoder = (
        config.d_model,
        config.decoder_layers,
        config.decoder_attention_heads,
        config.decoder_ffn_dim,
    )
    arch = STOCK_ARCHS.get(dims) if dims == decoder else None
    extra = [
        "--encoder-embed-dim",
        str(config.d_model),
        "--decoder-embed-dim",
        str(config.d_model),
        "--encoder-layers",
        str(config.encoder_layers),
        "--decoder-layers",
        str(config.decoder_layers),
        "--encoder-attention-heads",
        str(config.encoder_attention_heads),
        "--decoder-attention-heads",
        str(config.decoder_attention_heads),
        "--encoder-ffn-embed-dim",
        str(config.encoder_ffn_dim),
        "--decoder-ffn-embed-dim",
        str(config.decoder_ffn_dim),
        "--max-source-positions",
        str(config.max_position_embeddings),
        "--max-target-positions",
        str(config.max_position_embeddings),
        "--activation-fn",
        activation(config),
        "--dropout",
        str(config.dropout),
        "--attention-dropout",
        str(config.attention_dropout),
        "--activation-dropout",
        str(config.activation_dropout),
        "--encoder-layerdrop",
        str(config.encoder_layerdrop),
        "--decoder-layerdrop",
        str(config.decoder_layerdrop),
    ]
    args = translation_args(arch or "bart_large", data, extra)
    # a store_true flag cannot be turned off in argv; HF's scale_embedding is its inverse
    args.no_scale_embedding = not config.scale_embedding
    assert args.layernorm_embedding and args.share_all_embeddings
    assert not args.encoder_normalize_before and not args.decoder_normalize_before
    return args


def convert_bart(hf_model: Any, symbols: Optional[Dictionary]) -> Converted:
    """Convert a ``BartForConditionalGeneration``; ``symbols`` is fairseq's BART ``dict.txt``."""
    config = hf_model.config
    check_bart_config(config)
    if symbols is None:
        raise ConversionError(
            "BART needs --dict: fairseq's GPT-2 dict.txt the model's ids index "
            "(e.g. data/gpt2_bpe/dict.txt for facebook/bart-large*)"
        )
    hf_state = hf_model.state_dict()
    bias = hf_state.get("final_logits_bias")
    if bias is not None and bool(bias.ne(0).any()):
        raise refuse("final_logits_bias", "non-zero", "fairseq's output projection has no bias")
    shared = [
        k
        for k in (
            "model.encoder.embed_tokens.weight",
            "model.decoder.embed_tokens.weight",
            "lm_head.weight",
        )
        if k in hf_state
    ]
    check_tied(hf_state, "model.shared.weight", shared)
    dictionary = bart_dictionary(symbols, config.vocab_size)
    args = bart_args(config)
    task = TranslationTask(args, dictionary, dictionary)
    model = task.build_model(args).eval()
    key_map = expand(ENCODER_LAYER_KEYS, config.encoder_layers, TOP_KEYS)
    key_map = expand(DECODER_LAYER_KEYS, config.decoder_layers, key_map)
    keys = map_state(model, hf_state, key_map, ["model.shared.weight", "final_logits_bias"])
    stock = STOCK_ARCHS.get(
        (
            args.encoder_embed_dim,
            args.encoder_layers,
            args.encoder_attention_heads,
            args.encoder_ffn_embed_dim,
        )
    )
    summary = [
        f"BART -> fairseq bart (--arch {args.arch}; closest stock arch: "
        f"{stock if stock == args.arch else 'none, dims differ'})",
        f"dims: d_model {config.d_model}, layers {config.encoder_layers}+{config.decoder_layers}, "
        f"heads {config.encoder_attention_heads}/{config.decoder_attention_heads}, ffn "
        f"{config.encoder_ffn_dim}/{config.decoder_ffn_dim}, max positions "
        f"{config.max_position_embeddings}, activation {args.activation_fn}, "
        f"scale_embedding {config.scale_embedding}",
        f"{len(keys)} fairseq tensors from {len(hf_state)} Hugging Face tensors "
        "(shared embeddings checked tied, final_logits_bias checked zero)",
        f"vocabulary: {config.vocab_size} ids, fairseq index = Hugging Face id",
    ]
    settings = getattr(hf_model, "generation_config", None) or config
    gen = {k: getattr(settings, k, None) for k in GENERATION}
    gen = {k: v for k, v in gen.items() if v is not None}
    if gen:
        summary.append(f"not converted (generation settings, pass to fairseq-generate): {gen}")
    return Converted(
        model, args, dictionary, ("dict.txt", "dict.source.txt", "dict.target.txt"), summary, task
    )
