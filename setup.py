"""fairseq-el: memory-efficient lossless attention (EL-attention) for fairseq generation."""

from setuptools import find_packages, setup

setup(
    name="fairseq-el",
    version="0.1.0",
    description="EL-attention for fairseq: lossless, memory-efficient incremental decoding",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8",
    packages=find_packages(include=["fairseq_el", "fairseq_el.*"]),
    include_package_data=True,
    install_requires=[
        # Pin torch in the install step (torch==2.13.0 on this machine's CPU build);
        # this range only asks for a torch that fairseq 0.12 runs with.
        "torch>=1.13",
        # PyPI's fairseq 0.12.2 does not import on Python 3.11+ (dataclass mutable defaults).
        "fairseq==0.12.2; python_version < '3.11'",
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        # fairseq's TokenBlockDataset still uses np.compat, removed in numpy 2.
        "numpy<2",
        "sacrebleu>=2.0",
        "rouge-score>=0.1.2",
        "PyYAML>=5.1",  # task configs (configs/*.yaml)
    ],
    extras_require={
        "test": ["pytest>=7", "ruff>=0.5"],
        "hf": ["transformers>=4.30"],
        "plot": ["matplotlib>=3.5"],
        "bench": ["matplotlib>=3.5", "tqdm>=4", "transformers>=4.30", "ctranslate2>=4"],
    },
    entry_points={
        "console_scripts": [
            "fairseq-el-convert=fairseq_el.cli.convert_checkpoint:cli_main",
            "fairseq-el-user-dir=fairseq_el.cli.user_dir:cli_main",
            "fairseq-el-prepare=fairseq_el.recipes.cli.prepare_data:cli_main",
            "fairseq-el-run-task=fairseq_el.recipes.cli.run_task:cli_main",
            "fairseq-el-finetune=fairseq_el.recipes.cli.finetune:cli_main",
            "fairseq-el-demo=fairseq_el.recipes.cli.demo:cli_main",
            "fairseq-el-convert-hf=fairseq_el.convert.cli:cli_main",
            "fairseq-el-benchmark=fairseq_el.bench.cli:cli_main",
        ],
    },
)
