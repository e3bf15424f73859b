"""Data preparation on the shipped samples: readers, BPE round trip, binaries, refusals."""

import pytest
from fairseq.data import Dictionary, data_utils

from fairseq_el.paths import BPE_DIR, DATA_DIR
from fairseq_el.recipes import prepare, sources
from fairseq_el.recipes.bpe import GPT2BPE


@pytest.fixture(scope="module")
def bpe() -> GPT2BPE:
    return GPT2BPE()


def test_readers_count_the_shipped_samples():
    xsum = sources.read_line_pairs(
        DATA_DIR / "xsum_pyrxsum/documents.txt", DATA_DIR / "xsum_pyrxsum/references.txt"
    )
    assert len(xsum) == 100
    assert len(sources.read_xsum_jsonl(DATA_DIR / "xsum_hf_fixture/sample.json")) == 10
    stories = sources.read_stories([DATA_DIR / "cnndm_allennlp_stories/cnn_stories"])
    assert len(stories) == 20
    assert stories[0].target.startswith("President Bush to address the Veterans")
    assert "@highlight" not in stories[0].source + stories[0].target
    squad = sources.read_squad_qg(DATA_DIR / "squad_v2dev_haystack/small.json")
    assert len(squad) == 293  # the answerable (SQuAD 1.1 dev) questions
    assert squad[0] == sources.Pair(
        squad[0].source, "In what country is Normandy located?"
    ) and squad[0].source.startswith("France [SEP] The Normans")
    assert len(sources.read_squad_qg(DATA_DIR / "squad_v11_allennlp/squad.json")) == 5
    du = sources.read_line_pairs(
        DATA_DIR / "squad_qg_du2017/src-test.txt", DATA_DIR / "squad_qg_du2017/tgt-test.txt"
    )
    assert len(du) == 11877


def test_bpe_round_trip(bpe):
    texts = [p.source for p in sources.read_xsum_jsonl(DATA_DIR / "xsum_hf_fixture/sample.json")]
    texts += (DATA_DIR / "squad_qg_du2017/tgt-test.txt").read_text("utf-8").splitlines()[:50]
    for text in texts:
        assert bpe.decode(bpe.encode(text)) == text
    assert bpe.encode("Hello world") == ["15496", "995"]  # data/SOURCES.md, section 6


def test_prepare_binarizes_with_counts_and_reports_truncation(tmp_path, bpe, capsys):
    pairs = sources.read_xsum_jsonl(DATA_DIR / "xsum_hf_fixture/sample.json")
    limit = 64
    reports = prepare.prepare(prepare.split_by_spec(pairs, "valid:3,test:rest"), tmp_path, limit)
    expected_cut = sum(len(bpe.encode(p.source)) > limit - 1 for p in pairs[3:])
    test_report = reports[1]
    assert (test_report.split, test_report.examples) == ("test", 7)
    assert test_report.truncated == {"source": expected_cut, "target": 0} and expected_cut > 0
    assert f"{expected_cut} sources truncated" in capsys.readouterr().out
    dictionary = Dictionary.load(str(BPE_DIR / "dict.txt"))
    for split, count in (("valid", 3), ("test", 7)):
        prefix = tmp_path / f"{split}.source-target"
        src = data_utils.load_indexed_dataset(f"{prefix}.source", dictionary)
        tgt = data_utils.load_indexed_dataset(f"{prefix}.target", dictionary)
        assert len(src) == len(tgt) == count
        assert max(len(src[i]) for i in range(count)) <= limit  # BPE tokens + </s>
        assert dictionary.unk() not in src[0].tolist()
    first = pairs[3]
    tokens = (tmp_path / "test.bpe.source").read_text("utf-8").splitlines()[0].split()
    assert bpe.decode(tokens) == bpe.decode(bpe.encode(first.source)[: limit - 1])
    assert (tmp_path / "test.raw.target").read_text("utf-8").splitlines()[0] == first.target


def test_empty_lines_are_refused_with_their_number(tmp_path):
    source, target = tmp_path / "a.source", tmp_path / "a.target"
    source.write_text("one\ntwo\n   \nfour\n", encoding="utf-8")
    target.write_text("1\n2\n3\n4\n", encoding="utf-8")
    with pytest.raises(sources.EmptyLineError, match="line 3 is empty"):
        sources.read_line_pairs(source, target)
    story = "Some article text.\n\n@highlight\n\n"
    with pytest.raises(sources.EmptyLineError, match="no @highlight"):
        sources.parse_story(story, "x.story")


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(sources.InputError, match="no such text file"):
        sources.read_nonempty_lines(tmp_path / "missing.txt")
    (tmp_path / "a").write_text("x\ny\n", encoding="utf-8")
    (tmp_path / "b").write_text("x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has 2 lines but"):
        sources.read_line_pairs(tmp_path / "a", tmp_path / "b")
    small_dict = tmp_path / "dict.txt"
    small_dict.write_text("15496 1\n", encoding="utf-8")
    pairs = [sources.Pair("Hello world", "Hello")]
    with pytest.raises(prepare.DictionaryMismatchError, match=r"\['995'\] are not in"):
        prepare.prepare({"test": pairs}, tmp_path / "out", dict_path=small_dict)
    with pytest.raises(ValueError, match="needs examples 1..5; have 1"):
        prepare.split_by_spec(pairs, "test:5")
