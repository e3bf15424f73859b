"""``fairseq-el-user-dir``: print the installed plugin's path, for ``--user-dir``."""

import os


def cli_main() -> None:
    # Not importing fairseq_el: printing a path should not pay for importing fairseq.
    print(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


if __name__ == "__main__":
    cli_main()
