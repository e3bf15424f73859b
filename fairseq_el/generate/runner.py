"""One rank's generation, through fairseq's hooks, in fairseq-generate's order.

``tasks.setup_task``, ``checkpoint_utils.load_model_ensemble`` (EL by the architecture override,
stock with ``--stock``), ``task.load_dataset``, ``task.build_generator``,
``task.get_batch_iterator`` and ``task.inference_step``; hypotheses post-processed as
fairseq-generate prints them on its H-/D- lines.
"""

import argparse
import ast
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq import checkpoint_utils, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_el.accounting import GIB
from fairseq_el.convert.checkpoint import ConversionError, checkpoint_arch, load_checkpoint
from fairseq_el.convert.el_checkpoint import unsupported_option
from fairseq_el.generate.batching import AutoBatch, ModelMemory, default_budget, weight_bytes
from fairseq_el.generate.parts import PartWriter, dumps
from fairseq_el.generate.ranks import Ranks
from fairseq_el.generate.source import (
    Binarized,
    Examples,
    RawText,
    Selection,
    Sources,
    read_input,
    truncated,
)
from fairseq_el.models.architectures import ArchitectureError, el_arch, stock_arch
from fairseq_el.models.options import OVERRIDE_KEYS
from fairseq_el.usage import UsageError

logger = logging.getLogger("fairseq_el.generate")
OUT_OF_MEMORY = (torch.cuda.OutOfMemoryError,)


def example_seed(seed: int, example_id: int) -> int:
    """``--sampling-seed per-example``: torch's seed for example ``id``."""
    return (seed * (1 << 32) + example_id) % (1 << 63)


def check_gpt2_dictionary(dictionary: Any) -> None:
    """``--input`` without ``--bpe`` applies GPT-2 BPE: refuse a dictionary of other symbols
    (GPT-2 BPE's are its token ids), before a model is loaded."""
    symbols = dictionary.symbols[dictionary.nspecial :][:200]
    words = [s for s in symbols if not s.isdigit() and not s.startswith("madeupword")]
    if symbols and len(words) > len(symbols) // 2:
        raise UsageError(
            f"--input: without --bpe the sources get GPT-2 BPE, but the source "
            f"dictionary holds other symbols (e.g. {words[0]!r}): pass --bpe none "
            "for a word-level model, or the --bpe it was made with"
        )


@dataclass
class Stats:
    """One rank's counts, gathered for the summary."""

    generated: int = 0
    tokens: int = 0
    seconds: float = 0.0
    batches: Dict[str, int] = field(default_factory=dict)  # what each bucket ran at
    out_of_memory: int = 0
    skipped: Dict[str, List[int]] = field(default_factory=dict)
    truncated: int = 0
    peak_bytes: int = 0
    compile_graphs: int = 0  # --compile: graphs compiled, and the seconds that took (in seconds)
    compile_seconds: float = 0.0


def load_models(args: argparse.Namespace, task: Any) -> Tuple[List[torch.nn.Module], Any]:
    """Each checkpoint with its architecture switched to EL (or to stock with ``--stock``)."""
    try:
        user = ast.literal_eval(args.model_overrides)
        assert isinstance(user, dict)
    except (ValueError, SyntaxError, AssertionError) as err:
        raise UsageError(f"--model-overrides {args.model_overrides!r}: not a dict") from err
    if args.compile_mode != "none":
        given = user.get("el_compile", args.compile_mode)
        if given != args.compile_mode:
            raise UsageError(
                f"--compile {args.compile_mode} and --model-overrides el_compile={given!r} "
                "disagree; give one of them"
            )
        if args.stock:
            raise UsageError("--compile compiles the EL decoder; --stock builds the stock model")
        user = {**user, "el_compile": args.compile_mode}
    el_given = [k for k in OVERRIDE_KEYS if user.get(k) not in (None, False)]
    if args.stock and el_given:
        raise UsageError(
            f"--model-overrides {el_given[0]}: an EL model option, and --stock "
            "builds the stock model, which ignores it; drop one of them"
        )
    if args.batch_auto and not args.stock and "el_policy" not in user:
        user = {**user, "el_policy": "el"}  # batches sized by memory: the smallest state
    models, saved = [], None
    for path in utils.split_paths(args.path):
        try:
            state = load_checkpoint(path, mmap=True)
            why = None if args.stock else unsupported_option(state)
            if why:
                raise UsageError(f"--path {path}: {why}")
            arch = user.get("arch") or checkpoint_arch(state)
            arch = stock_arch(arch) if args.stock else el_arch(arch)
        except (ConversionError, ArchitectureError) as err:
            raise UsageError(f"--path {path}: {err}") from err
        loaded, cfg = checkpoint_utils.load_model_ensemble(
            [path],
            arg_overrides={**user, "arch": arch, "_name": arch},
            task=task,
            suffix=args.checkpoint_suffix,
            strict=args.checkpoint_shard_count == 1,
            num_shards=args.checkpoint_shard_count,
        )
        models += loaded
        saved = saved or cfg
    return models, saved


class Generation:
    """Task, models, generator and decoding of one rank."""

    def __init__(self, args: argparse.Namespace, ranks: Ranks) -> None:
        self.args = args
        self.cfg = cfg = convert_namespace_to_omegaconf(args)
        if args.seed is not None and not args.no_seed_provided:
            np.random.seed(args.seed)  # fairseq-generate's seeding, before the models are built
            utils.set_torch_seed(args.seed)
        cuda = torch.cuda.is_available() and not args.cpu
        if cuda:
            torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        )
        self.task = tasks.setup_task(cfg.task)
        if getattr(args, "bpe_implicit", False):
            check_gpt2_dictionary(self.task.source_dictionary)
        self.models, saved = load_models(args, self.task)
        if not args.raw_input:
            self.task.load_dataset(args.gen_subset, task_cfg=saved.task)
        for model in self.models:
            if args.fp16:
                model.half()
            elif args.bf16:
                model.bfloat16()
            model.to(self.device)
            model.prepare_for_inference_(cfg)
        self.generator = self.task.build_generator(
            self.models,
            cfg.generation,
            extra_gen_cls_kwargs={"lm_model": None, "lm_weight": cfg.generation.lm_weight},
        )
        self.tokenizer = self.task.build_tokenizer(cfg.tokenizer)
        self.bpe = self.task.build_bpe(cfg.bpe)
        self.max_positions = utils.resolve_max_positions(
            self.task.max_positions(), *[m.max_positions() for m in self.models]
        )
        self.strip = getattr(self.generator, "symbols_to_strip_from_output", {self.generator.eos})
        self.per_example_seed = args.sampling and args.sampling_seed == "per-example"
        self.caps: Dict[Optional[int], int] = {}  # batch limits learnt from out-of-memory
        self.memory = [ModelMemory.of(m) for m in self.models]
        self.truncated = 0  # raw sources cut by --truncate-source
        self.user_ids: Optional[List[Any]] = None  # JSON lines' own ids, by example id

    # -- examples ------------------------------------------------------------------------------

    def examples(self, raw: Optional[Sources] = None) -> Examples:
        """The binarized split, or ``raw`` sources (:func:`read_input`) encoded on demand."""
        a = self.args
        if raw is None:
            raw = read_input(a)
        if raw is None:
            return Binarized(self.task.dataset(a.gen_subset))
        self.user_ids = raw.user_ids
        return RawText(
            raw.texts,
            raw.name,
            a.skip_empty,
            self.encode,
            self.task.build_dataset_for_inference,
            raw.user_ids,
        )

    def head(self, example_id: int) -> Dict[str, Any]:
        """A record's first keys: fairseq's id, and the user's beside it (JSON lines)."""
        if self.user_ids is None:
            return {"id": int(example_id)}
        return {"id": int(example_id), "user_id": self.user_ids[int(example_id)]}

    def encode(self, line: str) -> torch.Tensor:
        """As fairseq-interactive: tokenizer, BPE, source dictionary; ``--truncate-source``."""
        if self.tokenizer is not None:
            line = self.tokenizer.encode(line)
        if self.bpe is not None:
            line = self.bpe.encode(line)
        src_dict = self.task.source_dictionary
        tokens = src_dict.encode_line(line, add_if_not_exist=False).long()
        if self.args.truncate_source and tokens.numel() > self.args.max_source_positions:
            self.truncated += 1
            tokens = truncated(tokens, self.args.max_source_positions, src_dict.eos())
        return tokens

    def truncated_count(self, dataset: Any, indices: List[int]) -> int:
        """Sources of ``indices`` cut by ``--truncate-source`` (binarized: those at the limit)."""
        if not self.args.truncate_source or self.args.raw_input:
            return self.truncated
        sizes = getattr(dataset, "src_sizes", None)
        if sizes is None or not indices:
            return 0
        return int((np.asarray(sizes)[indices] >= self.args.max_source_positions).sum())

    def decode(self, text: str) -> str:
        if self.bpe is not None:
            text = self.bpe.decode(text)
        if self.tokenizer is not None:
            text = self.tokenizer.decode(text)
        return text

    def record(self, example_id: int, hypos: List[Dict[str, Any]]) -> str:
        """The JSONL line: what fairseq-generate prints on the H-/D- lines, as JSON."""
        out = []
        for hypo in hypos[: self.args.nbest]:
            _, text, _ = utils.post_process_prediction(
                hypo_tokens=hypo["tokens"].int().cpu(),
                src_str="",
                alignment=hypo["alignment"],
                align_dict=None,
                tgt_dict=self.task.target_dictionary,
                remove_bpe=self.cfg.common_eval.post_process,
                extra_symbols_to_ignore=self.strip,
            )
            score = (hypo["score"] / math.log(2)).item()  # base 2, as fairseq-generate prints it
            out.append(
                {"text": self.decode(text), "tokens": hypo["tokens"].tolist(), "score": score}
            )
        return dumps({**self.head(example_id), "hypotheses": out})

    # -- batches -------------------------------------------------------------------------------

    def auto_batch(self, local_world: int) -> AutoBatch:
        weights = weight_bytes(self.models)
        if self.args.max_memory is not None:
            budget = int(self.args.max_memory * GIB)
        else:
            budget = default_budget(self.device, weights, local_world)
        gen = self.generator
        return AutoBatch(
            self.memory, weights, budget, gen.beam_size, gen.max_len_a, gen.max_len_b, gen.max_len
        )

    def plan(
        self, dataset: Any, indices: Sequence[int], auto: Optional[AutoBatch]
    ) -> List[Tuple[Optional[int], List[int], Optional[int], Optional[int]]]:
        """(bucket, indices, max_sentences, max_tokens) per batch iterator to run."""
        a = self.args
        if not indices:  # an empty shard (fairseq's batching fails on no examples)
            return []
        if self.per_example_seed:
            return [(None, list(indices), 1, None)]
        if auto is None:
            return [(None, list(indices), a.batch_size, a.max_tokens)]
        buckets: Dict[int, List[int]] = {}
        for index in indices:
            buckets.setdefault(auto.bucket(int(dataset.num_tokens(index))), []).append(index)
        plans = []
        for bucket in sorted(buckets, reverse=True):
            plans.append((bucket, buckets[bucket], auto.batch(bucket), None))
        return plans

    def too_long(self, dataset: Any, indices: Sequence[int]) -> Tuple[List[int], List[int]]:
        """``indices`` split into those fairseq's size filter keeps and those it drops."""
        if not indices:
            return [], []
        kept, ignored = dataset.filter_indices_by_size(
            np.asarray(indices, dtype=np.int64), self.max_positions
        )
        return [int(i) for i in kept], [int(i) for i in ignored]

    def infer(
        self,
        dataset: Any,
        indices: List[int],
        id_of: np.ndarray,
        bucket: Optional[int],
        stats: Stats,
    ) -> List[Tuple[int, List[Dict[str, Any]]]]:
        """Hypotheses of ``indices``; an out-of-memory halves the batch and retries."""
        cap = self.caps.get(bucket)
        if cap is not None and len(indices) > cap:
            return [
                out
                for start in range(0, len(indices), cap)
                for out in self.infer(dataset, indices[start : start + cap], id_of, bucket, stats)
            ]
        sample = dataset.collater([dataset[i] for i in indices])
        sample = utils.move_to_cuda(sample) if self.device.type == "cuda" else sample
        prefix = None
        if self.args.prefix_size > 0:
            prefix = sample["target"][:, : self.args.prefix_size]
        if self.per_example_seed:
            utils.set_torch_seed(example_seed(self.args.seed, int(id_of[indices[0]])))
        try:
            hypos = self.task.inference_step(
                self.generator, self.models, sample, prefix_tokens=prefix
            )
        except OUT_OF_MEMORY:
            if len(indices) == 1:
                raise
            del sample
            torch.cuda.empty_cache()
            stats.out_of_memory += 1
            self.caps[bucket] = half = max(1, len(indices) // 2)
            logger.warning(
                f"out of memory at batch {len(indices)}: retrying it as batches of "
                f"{half}, and keeping that limit"
            )
            return self.infer(dataset, indices, id_of, bucket, stats)
        return list(zip(sample["id"].tolist(), hypos))

    def batches(
        self,
        dataset: Selection,
        max_sentences: Optional[int],
        max_tokens: Optional[int],
        auto_bucket: Optional[int],
    ) -> Any:
        """fairseq's batch iterator over ``dataset``; every example in a batch.

        fairseq 0.12 drops examples when a batch holds fewer sentences than
        ``--required-batch-size-multiple`` (e.g. ``--batch-size 4`` with the default 8; upstream,
        fairseq-generate alike): then the batches are made again with multiple 1. Batches of
        ``--batch-size auto`` (``auto_bucket`` given) use multiple 1 and load in this process:
        one loader per length bucket would start and stop a ``--num-workers`` process each
        (about a second apiece, measured: 128 CNN/DM examples in 15 buckets took 22.5 s with one
        worker, 2.4 s without); the outputs do not depend on it.
        """
        a = self.args
        multiple = a.required_batch_size_multiple if auto_bucket is None else 1
        while True:
            itr = self.task.get_batch_iterator(
                dataset=dataset,
                max_tokens=max_tokens,
                max_sentences=max_sentences,
                max_positions=self.max_positions,
                ignore_invalid_inputs=True,
                required_batch_size_multiple=multiple,
                seed=a.seed,
                num_shards=1,
                shard_id=0,
                num_workers=0 if auto_bucket is not None else a.num_workers,
                data_buffer_size=a.data_buffer_size,
                disable_iterator_cache=True,
            )
            covered = sum(len(batch) for batch in itr.frozen_batches)
            if covered == len(dataset.keep) or multiple == 1:
                return itr.next_epoch_itr(shuffle=False)
            logger.warning(
                f"fairseq's batching with --required-batch-size-multiple {multiple} "
                f"covers {covered} of {len(dataset.keep)} examples (upstream bug): "
                "batching with multiple 1"
            )
            multiple = 1

    def run(
        self,
        dataset: Any,
        id_of: np.ndarray,
        indices: List[int],
        writer: PartWriter,
        auto: Optional[AutoBatch],
        on_batch: Callable[[], None],
        stats: Stats,
    ) -> None:
        """Generate ``indices`` of ``dataset`` (sources known to fit) into ``writer``."""
        for bucket, chunk, max_sentences, max_tokens in self.plan(dataset, indices, auto):
            stats.batches[str(bucket or "all")] = max_sentences or max_tokens
            if auto is not None and bucket is not None:  # EL: encoder sentences per pass
                for model, memory in zip(self.models, self.memory):
                    if memory.el:
                        model.encoder.sentences_per_pass = auto.per_pass(memory, bucket)
            itr = self.batches(Selection(dataset, chunk), max_sentences, max_tokens, bucket)
            for sample in itr:
                if "net_input" not in sample:
                    continue
                start = time.perf_counter()
                with torch.no_grad():
                    done = self.infer(dataset, sample["id"].tolist(), id_of, bucket, stats)
                stats.seconds += time.perf_counter() - start
                writer.write(self.record(id_of[i], hypos) for i, hypos in done)
                stats.generated += len(done)
                stats.tokens += sum(len(hypos[0]["tokens"]) for _, hypos in done if hypos)
                on_batch()
        if self.device.type == "cuda":
            stats.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        steps = [getattr(m.decoder, "compiled_step", None) for m in self.models]
        stats.compile_graphs = sum(s.total_graphs for s in steps if s is not None)
        stats.compile_seconds = sum(s.total_compile_seconds for s in steps if s is not None)
