"""Stock fairseq vs EL generation benchmark; see ``fairseq_el.bench.cli`` (fairseq-el-benchmark)."""

from fairseq_el.bench.cli import cli_main

if __name__ == "__main__":
    cli_main()
