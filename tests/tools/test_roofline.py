"""The GPU roofline model (``fairseq-el-roofline``) charges each variant's self-attention what its
cache does: stock fairseq's ``torch.cat`` and ``index_select`` copies, none for EL models'
copy-free cache (in-place writes, reorder by ancestry)."""

from fairseq_el.bench import analytic

BART_LARGE = dict(C=1024, H=16, b=2)


def test_stock_self_attention_copies_its_history_every_step():
    for variant in ("stock-per-beam", "stock-per-sentence"):
        flops, nbytes = analytic.self_attention_work(variant, n=16, k=4, t=100, **BART_LARGE)
        # read K and V, cat (read + write both), index_select (read + write both)
        assert nbytes == 10 * 16 * 100 * 1024 * 2 and flops == 4 * 16 * 100 * 1024
        _, greedy = analytic.self_attention_work(variant, n=4, k=1, t=100, **BART_LARGE)
        assert greedy == 6 * 4 * 100 * 1024 * 2  # no reorder without beams


def test_copy_free_cache_reads_the_history_once_and_moves_no_slot():
    n, t = 16, 100
    _, greedy = analytic.self_attention_work("el", n=n, k=1, t=t, **BART_LARGE)
    assert greedy == (2 * n * t + 2 * n) * 1024 * 2  # read K and V, write the new position
    flops, beam = analytic.self_attention_work("el", n=n, k=4, t=t, **BART_LARGE)
    stock_flops, stock = analytic.self_attention_work(
        "stock-per-sentence", n=n, k=4, t=t, **BART_LARGE
    )
    assert flops == 4 * stock_flops  # each query scores every slot of its group
    assert greedy < beam < stock / 3  # ancestry indices and k-wide scores, far below the copies
    sa_flops, el_sa = analytic.self_attention_work("el-sa", n=n, k=4, t=t, **BART_LARGE)
    sa_greedy_flops, _ = analytic.self_attention_work("el-sa", n=n, k=1, t=t, **BART_LARGE)
    expand = 4 * n * 1024 * 1024  # queries expanded, values projected: once per row
    assert sa_flops - expand == 4 * (sa_greedy_flops - expand) == 16 * flops  # H times el's
    weights = 2 * 1024 * 1024 * 2  # the key and value weights that expand the queries
    assert el_sa - weights < stock / 2  # the history read twice, C per position, and no copy


def test_roofline_table_prints_every_setting():
    table = analytic.table(["V100"], ["beam", "greedy"])
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 2 * 2 * len(analytic.PRESETS)  # fp16 and fp32 per setting and search
    assert all(line.startswith("| ") and line.endswith(" |") for line in rows)
