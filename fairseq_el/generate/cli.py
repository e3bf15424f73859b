"""``fairseq-el-generate``: fairseq-generate for a corpus, into JSONL; sharded, resumable.

Examples::

    fairseq-el-generate DATA --path model.pt --gen-subset test -s source -t target \\
        --beam 4 --lenpen 2.0 --max-len-b 140 --min-len 55 --no-repeat-ngram-size 3 \\
        --truncate-source --bpe gpt2 --batch-size auto --output test.jsonl
    torchrun --nproc-per-node 8 -m fairseq_el.generate.cli DATA ... --output test.jsonl
    fairseq-el-generate DATA --path model.pt --input articles.txt --output out.jsonl --resume

Bad input: one line (``fairseq-el-generate: message``), exit status 2, raised before anything is
generated or written. Interrupted: exit status 130, the finished examples stay in
``OUT.jsonl.parts`` for ``--resume``; ``OUT.jsonl`` exists only once every example is in it.
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from fairseq_el.errors import UserError
from fairseq_el.files import OutputError, write_json
from fairseq_el.generate import ranks as ranks_mod
from fairseq_el.generate.options import PROG, fingerprint, parse
from fairseq_el.generate.parts import PartStore, PartWriter, dumps
from fairseq_el.generate.report import Progress, as_dict, describe, score, summary
from fairseq_el.generate.runner import Generation, Stats
from fairseq_el.generate.source import TOO_LONG, read_input, read_lines
from fairseq_el.generate.verify import EXIT_DIFFERS, as_summary, verify
from fairseq_el.paths import BPE_DIR
from fairseq_el.usage import EXIT_USAGE, UsageError, entry_point

logger = logging.getLogger("fairseq_el.generate")


def setup_logging(ranks: ranks_mod.Ranks) -> None:
    prefix = f"[rank {ranks.rank}] " if ranks.distributed else ""
    logging.basicConfig(
        format=f"%(asctime)s | %(levelname)s | %(name)s | {prefix}%(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper() if ranks.main else logging.WARNING,
        stream=sys.stderr,
    )


def on_main(ranks: ranks_mod.Ranks, check: Callable[[], Any]) -> Any:
    """``check()`` on rank 0, its result (or its user error, raised) on every rank."""
    result, error = None, None
    if ranks.main:
        try:
            result = check()
        except UserError as err:
            error = err
    result, error = ranks_mod.broadcast(ranks, (result, error))
    if error is not None:
        raise error
    return result


def convert_hf_model(spec: str) -> None:
    """``--hf-model``: converted into the package's cache unless it is there already."""
    from fairseq_el.convert.hf_hub import ensure_converted, resolve

    done = ensure_converted(resolve(spec), str(BPE_DIR / "dict.txt"))
    verb = "converted into" if done["converted"] else "already converted in"
    logger.info(f"--hf-model {spec}: {verb} {done['dir']}")


def generate(args: argparse.Namespace, ranks: ranks_mod.Ranks) -> None:
    """Every refusal first (options, parts, inputs, references, lengths, batch), then the work:
    parts folder, generation, merge, summary."""
    output = Path(args.output)
    store = PartStore(output)
    options = fingerprint(args) if ranks.main else {}  # hashes the input once
    on_main(ranks, lambda: store.check(options, args.resume))
    raw = read_input(args)  # JSON lines' ids and fields checked before a model is loaded
    references: Optional[List[str]] = None
    if args.references:
        references = read_lines(args.references, "--references")
    if args.hf_model:
        on_main(ranks, lambda: convert_hf_model(args.hf_model))
    gen = Generation(args, ranks)
    examples = gen.examples(raw)
    if references is not None:
        if len(references) != examples.count:
            raise UsageError(
                f"--references {args.references}: {len(references)} lines for "
                f"{examples.count} examples"
            )
    mine = [i for i in range(examples.count) if ranks.owns(i)]
    dataset, id_of, indices = examples.dataset([i for i in mine if i not in examples.skipped])
    kept, dropped = gen.too_long(dataset, indices)
    dropped_ids = [int(id_of[i]) for i in dropped]
    all_dropped = sorted(i for ids in ranks_mod.gather(ranks, dropped_ids) for i in ids)
    if all_dropped and not args.skip_invalid_size_inputs_valid_test:
        shown = ", ".join(map(str, all_dropped[:10])) + (", ..." if len(all_dropped) > 10 else "")
        raise UsageError(
            f"{len(all_dropped)} examples are longer than the model's positions "
            f"{gen.max_positions} (ids {shown}): pass --truncate-source, or "
            "--skip-invalid-size-inputs-valid-test to skip them"
        )
    auto = gen.auto_batch(ranks.local_world) if args.batch_auto else None
    longest = max(ranks_mod.gather(ranks, max(map(dataset.num_tokens, kept), default=0)))
    if auto is not None and longest and auto.batch(auto.bucket(longest)) == 0:
        raise UsageError(
            auto.explain(auto.bucket(longest), 0) + ": not even one sentence "
            "fits; raise --max-memory"
        )

    # the work: nothing above wrote anything
    plan = on_main(ranks, lambda: store.start(options, args.resume))
    todo = examples.count - len(plan.done)
    if args.resume:
        torn = f" (ignored {plan.torn} torn last lines)" if plan.torn else ""
        logger.info(
            f"resume: {len(plan.done)} of {examples.count} examples done in "
            f"{store.dir}{torn}, generating the {todo} missing"
        )
    stats = Stats(truncated=gen.truncated_count(dataset, kept))
    for i in mine:
        if i in examples.skipped and i not in plan.done:
            stats.skipped.setdefault(examples.skipped[i], []).append(i)
    if dropped_ids:
        stats.skipped.setdefault(TOO_LONG, []).extend(i for i in dropped_ids if i not in plan.done)
    kept = [i for i in kept if int(id_of[i]) not in plan.done]

    writer = PartWriter(store.part(plan.attempt, ranks.rank, ranks.world))
    parts = [store.part(plan.attempt, r, ranks.world) for r in range(ranks.world)]
    progress = Progress(parts, todo, ranks.main and not args.no_progress_bar)
    try:
        writer.write(
            dumps({**gen.head(i), "hypotheses": [], "skipped": reason})
            for reason, ids in sorted(stats.skipped.items())
            for i in ids
        )
        gen.run(dataset, id_of, kept, writer, auto, progress.refresh, stats)
        ranks_mod.wait_all(ranks, progress.refresh)
    finally:
        writer.close()
        progress.close()
    gathered = ranks_mod.gather(ranks, as_dict(stats))
    if not ranks.main:
        return
    store.merge(range(examples.count))
    result = summary(gathered, examples.count, len(plan.done), settings(args, gen, ranks))
    if references is not None:
        result["scores"] = score(output, args.references, args.metric)
    verdict = None
    if args.verify:
        del gen, dataset  # the EL model's memory, before stock's is loaded
        verdict = verify(args, raw, output)
        result["verify"] = as_summary(verdict)
    summary_path = output.with_name(output.name + ".summary.json")
    write_json(summary_path, result)
    print(describe(result, output, summary_path), file=sys.stderr)
    if verdict is not None and not verdict.passed:
        print(f"{PROG}: --verify: {verdict.first_difference} ({verdict.rule})", file=sys.stderr)
        raise SystemExit(EXIT_DIFFERS)


def settings(args: argparse.Namespace, gen: Generation, ranks: ranks_mod.Ranks) -> dict:
    attention = "stock" if args.stock else "EL"
    variants = sorted({m.variant.value for m in gen.memory})
    dtype = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    return {
        "attention": f"{attention} ({', '.join(variants)})",
        "world_size": ranks.world,
        "device": gen.device.type,
        "dtype": dtype,
        "compile": args.compile_mode,
        "batch_rule": "auto"
        if args.batch_auto
        else (
            f"--batch-size {args.batch_size}"
            if args.batch_size
            else f"--max-tokens {args.max_tokens}"
        ),
    }


@entry_point(PROG)
def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry: exit 0 done, 2 bad input (one line, from rank 0), 3 ``--verify`` found a
    difference, 130 interrupted."""
    ranks = ranks_mod.from_env()
    output = None
    try:
        args = parse(argv, ranks.distributed)
        output = Path(args.output)
        setup_logging(ranks)
        if args.sampling and args.sampling_seed == "global" and ranks.distributed:
            raise UsageError(
                "--sampling-seed global follows fairseq-generate's single-process "
                "random stream; with several ranks use --sampling-seed per-example"
            )
        ranks_mod.init(ranks, output)
        try:
            generate(args, ranks)
        finally:
            ranks_mod.finish(ranks, output)
    except UserError as err:
        if ranks.main or isinstance(err, OutputError):  # every rank has the same usage error
            raise
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        where = f" in {PartStore(output).dir}" if output is not None else ""
        print(
            f"{PROG}: interrupted; finished examples are kept{where}: rerun with --resume",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
