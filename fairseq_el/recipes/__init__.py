"""Task recipes: XSum, CNN/DailyMail and SQuAD question generation, end to end.

One concept per module: :mod:`.bpe` (offline GPT-2 BPE), :mod:`.sources` (raw datasets to
source/target pairs), :mod:`.prepare` (pairs to fairseq binaries), :mod:`.config` (task YAML),
:mod:`.qg_metrics` (QG metrics; ROUGE/BLEU are :mod:`fairseq_el.metrics`), :mod:`.runner`
(fairseq-generate, stock or EL),
:mod:`.compare`, :mod:`.finetune` and :mod:`.demo`.
"""
