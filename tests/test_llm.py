"""llm: examples (join, duplicates, mismatch), prompt template, caption-only labels, tokenizers, option validation,
config files. Fast tests: no training here (see test_llm_train.py)."""

from pathlib import Path

import pytest
import torch

from aerialdata.captionset import CaptionDataset
from composition.extract import with_scenes
from composition.schema import read_jsonl
from composition.text import to_prompt
from llm.examples import CaptionExamples, PromptTemplate, build_image_examples, join_records
from llm.finetune import main
from llm.model import ModelOptions, option_problems, validate_options
from llm.tokenizer import IGNORE_INDEX, CaptionCollator, encode_example, prompt_ids, train_tokenizer
from segcap.cli import parse, run
from segcap.errors import ConfigError, DataError

HERE = Path(__file__).resolve().parent
FIX = HERE / "data" / "llm"
REPO = HERE.parent
CAPTIONS = FIX / "rsicd" / "dataset_rsicd.json"
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 128}


@pytest.fixture(scope="module")
def records():
    return read_jsonl(FIX / "compositions.jsonl")


@pytest.fixture(scope="module")
def capset():
    return CaptionDataset(CAPTIONS)


def _plain(record):  # a stand-in renderer for tests about joining, not wording
    return " ".join(c["name"] for c in record["classes"])


# ------------------------------------------------------------------------------------------------ examples
def test_join_by_stem_in_caption_set_order(records, capset):
    recs = [dict(r) for r in records]
    recs[0] = {**recs[0], "image": Path(recs[0]["image"]).stem + ".png"}  # another suffix joins by stem
    pairs = join_records(recs, capset, ["train"])
    assert [it.filename for _, it in pairs] == [it.filename for it in capset.items if it.split == "train"]
    for rec, it in pairs:
        assert Path(rec["image"]).stem == Path(it.filename).stem


def test_duplicate_pairs_dropped(records, capset):
    tmpl = PromptTemplate()
    images, dropped = build_image_examples(records, capset, "train", tmpl, render=_plain)
    # pond_1 has one caption twice (after lowercasing); pond_2 shares its prompt and one caption with pond_1
    assert dropped == 2
    pairs = [(im.prompt, c) for im in images for c in im.captions]
    assert len(pairs) == len(set(pairs)) == 8 * 5 - 2
    pond1 = next(im for im in images if im.image == "pond_1.jpg")
    assert pond1.captions.count("a pond is surrounded by green trees .") == 1
    pond2 = next(im for im in images if im.image == "pond_2.jpg")
    assert "a pond is surrounded by green trees ." not in pond2.captions


def test_missing_composition_is_a_clear_error(capset):
    recs = read_jsonl(FIX / "compositions_missing.jsonl")
    with pytest.raises(DataError) as e:
        join_records(recs, capset, ["train"], source="compositions_missing.jsonl")
    msg = str(e.value)
    assert "1 of 8" in msg and "forest_1.jpg" in msg and "compositions_missing.jsonl" in msg
    pairs = join_records(recs, capset, ["train"], allow_missing=True)
    assert len(pairs) == 7
    assert len(join_records(recs, capset, ["val"])) == 2  # other splits are complete


def test_unknown_and_duplicate_records_are_errors(records, capset):
    extra = [*records, {**records[0], "image": "airport_9.jpg"}, {**records[1], "image": "airport_10.jpg"}]
    with pytest.raises(DataError, match=r"2 of 14 composition\(s\) name images .* airport_9.jpg"):
        join_records(extra, capset, ["train"])
    with pytest.raises(DataError, match="more than once"):
        join_records([*records, records[0]], capset, ["train"])


def test_prompt_template_full_and_blind(records):
    rec = records[0]
    full = PromptTemplate(mode="full").render_text(to_prompt(rec))
    blind = PromptTemplate(mode="blind").render_text(to_prompt(rec))
    assert to_prompt(rec) in full and full.endswith("Caption:")
    assert blind == f"{PromptTemplate().instruction}\nCaption:"
    assert PromptTemplate(template="{instruction} {oops}").problems() == [
        "prompt_template uses unknown placeholder(s) {oops}; allowed: {instruction}, {composition}, {neighbours}",
        "prompt_template lacks {composition}: the model would never see the composition text",
    ]


def test_prompt_modes_take_the_scene_line_and_the_composition_apart(records, capset):
    """The ablation of issue 23: both (full), composition only, scene only, neither (blind)."""
    plain = records[0]
    rec = with_scenes(plain, [{"name": "pond", "probability": 0.874}, {"name": "river", "probability": 0.1}])
    text, clauses = to_prompt(rec), to_prompt(plain)
    head = PromptTemplate().instruction
    prompt = {m: PromptTemplate(mode=m).render_text(text) for m in ("full", "composition", "scene", "blind")}
    assert prompt == {"full": f"{head}\nscene: pond 87%, river 10%\n{clauses}\nCaption:",
                      "composition": f"{head}\n{clauses}\nCaption:",
                      "scene": f"{head}\nscene: pond 87%, river 10%\nCaption:",
                      "blind": f"{head}\nCaption:"}
    # a record without scenes: composition reads as full, scene as blind
    for mode, same in (("full", "full"), ("composition", "full"), ("scene", "blind"), ("blind", "blind")):
        assert PromptTemplate(mode=mode).render_text(clauses) == PromptTemplate(mode=same).render_text(clauses)
    assert PromptTemplate(mode="scenes").problems() == ["PromptTemplate: mode 'scenes' is invalid; expected one of "
                                                         "full, composition, scene, blind (default: full)"]
    # through the examples: each image's prompt has its own scene line
    scened = [with_scenes(r, [{"name": Path(r["image"]).stem.split("_")[0], "probability": 0.9}]) for r in records]
    images, _ = build_image_examples(scened, capset, "train", PromptTemplate(mode="scene"))
    assert all(im.prompt == f"{head}\nscene: {im.image.split('_')[0]} 90%\nCaption:" for im in images)


@pytest.mark.parametrize("mode", ["composition", "scene"])
def test_finetune_takes_the_new_prompt_modes(mode, tmp_path):
    kw = parse(main, ["--compositions", "c.jsonl", "--captions", "d.json", "--out", str(tmp_path / "o"),
                      "--prompt-mode", mode])
    assert kw["prompt_mode"] == mode
    with pytest.raises(ConfigError, match="expected one of full, composition, scene, blind"):
        parse(main, ["--compositions", "c.jsonl", "--captions", "d.json", "--out", "o", "--prompt-mode", "scenes"])


def test_captions_per_image_sample_and_fixed(records, capset):
    images, _ = build_image_examples(records, capset, "train", PromptTemplate(), render=_plain)
    assert len(CaptionExamples(images, "all")) == sum(len(im.captions) for im in images)
    sample = CaptionExamples(images, "sample", seed=0)
    assert len(sample) == len(images)
    draws = []
    for epoch in range(6):
        sample.set_epoch(epoch)
        draws.append([sample[i][1] for i in range(len(sample))])
    assert len({tuple(d) for d in draws}) > 1  # a new draw per epoch
    sample.set_epoch(2)
    assert [sample[i][1] for i in range(len(sample))] == draws[2]  # reproducible
    fixed = CaptionExamples(images, "fixed", seed=0)
    first = [fixed[i][1] for i in range(len(fixed))]
    fixed.set_epoch(5)
    assert [fixed[i][1] for i in range(len(fixed))] == first
    for i, (prompt, cap) in enumerate(sample):
        assert prompt == images[i].prompt and cap in images[i].captions


# ------------------------------------------------------------------------------------------------ tokens
@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_tokenizer_round_trip_and_specials(kind):
    texts = ["a pond is surrounded by green trees .", "many cars are parked in a parking lot .",
             "vegetation 70% center, 2 regions; water 30% center\nCaption:"]
    tok = train_tokenizer(texts, kind=kind, vocab_size=300 if kind == "bpe" else 100)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok(texts[0], add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == (texts[0] if kind == "bpe" else "a pond is surrounded by green trees.")


def test_labels_mask_the_prompt_and_end_with_eos():
    prompt, caption = "Describe.\nwater 30% center\nCaption:", "a pond among trees ."
    tok = train_tokenizer([prompt, caption], kind="bpe", vocab_size=300)
    ex = encode_example(tok, prompt, caption, max_length=128)
    p = prompt_ids(tok, prompt)
    assert ex["input_ids"][: len(p)] == p  # generation starts from exactly these ids
    assert ex["labels"][: len(p)] == [IGNORE_INDEX] * len(p)
    cap = ex["labels"][len(p) :]
    assert IGNORE_INDEX not in cap and cap[-1] == tok.eos_token_id and cap == ex["input_ids"][len(p) :]
    assert tok.decode(cap[:-1]).strip() == caption

    short = encode_example(tok, prompt, caption, max_length=len(cap) + 4)  # too long: the prompt's start goes
    assert len(short["input_ids"]) == len(cap) + 4 and short["input_ids"][0] == tok.bos_token_id
    assert short["labels"][-len(cap) :] == cap

    batch = CaptionCollator(tok.pad_token_id)([ex, short])
    n = batch["input_ids"].shape[1]
    assert n % 8 == 0 and batch["labels"].shape == (2, n)
    k = len(short["input_ids"])
    assert torch.all(batch["labels"][1, k:] == IGNORE_INDEX) and torch.all(batch["attention_mask"][1, k:] == 0)
    assert torch.all(batch["input_ids"][1, k:] == tok.pad_token_id)


# ------------------------------------------------------------------------------------------------ options
def test_every_conflict_is_listed(tmp_path):
    opts = ModelOptions(base_model=str(tmp_path / "no-such-model"), quantize="nf4", method="full", precision="fp16",
                        tiny_model={"hidden_size": 64})
    problems = option_problems(opts, cuda=False)
    text = "\n".join(problems)
    assert "quantize nf4 needs --method lora" in text
    assert "no-such-model is not a folder" in text
    assert "precision fp16 needs CUDA" in text
    assert "tiny_model is set but base_model is a checkpoint path" in text
    assert len(problems) == 4
    with pytest.raises(ConfigError) as e:
        validate_options(opts, cuda=False)
    assert e.value.problems == problems and str(e.value).startswith("4 problems with the options:")


def test_unknown_module_and_bad_tiny_dims():
    opts = ModelOptions(method="lora", quantize="nf4", lora_target_modules=("q_proj", "qkv", "dense"), lora_r=0,
                        tiny_model={**TINY, "hidden_size": 48, "num_attention_heads": 2, "intermediate_size": 100,
                                    "hidden_dropout": 0.1})
    problems = option_problems(opts, cuda=False)
    text = "\n".join(problems)
    assert "ModelOptions: lora_r 0 is invalid; expected an integer >= 1 (default: 16)" in text
    assert "unknown LlamaConfig field(s) hidden_dropout" in text
    assert "not so: hidden_size = 48, intermediate_size = 100" in text
    ok = ModelOptions(method="lora", lora_target_modules=("q_proj", "qkv", "dense"), tiny_model=TINY)
    (msg,) = option_problems(ok, cuda=False)
    assert msg.startswith("lora_target_modules: unknown module name(s) qkv, dense; the model's linear modules are")
    assert "q_proj" in msg and "gate_proj" in msg
    assert option_problems(ModelOptions(method="lora", quantize="nf4", tiny_model=TINY), cuda=False) == []


def _fake_checkpoint(folder: Path) -> Path:
    """A local HF checkpoint folder (config only is enough for validation)."""
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=128).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["tiny.yaml", "llama2-7b-qlora.yaml"])
def test_config_files_parse_and_validate(name, tmp_path):

    cfg = REPO / "configs" / "llm" / name
    args = ["--config", str(cfg), "--compositions", "c.jsonl", "--captions", "d.json", "--out", str(tmp_path / "o")]
    if name.startswith("llama2"):
        args += ["--base-model", str(_fake_checkpoint(tmp_path / "llama"))]
    kw = parse(main, args)
    opts = ModelOptions(
        base_model=kw["base_model"], tiny_model=kw["tiny_model"] or {}, quantize=kw["quantize"], method=kw["method"],
        lora_r=kw["lora_r"], lora_alpha=kw["lora_alpha"], lora_dropout=kw["lora_dropout"],
        lora_target_modules=tuple(kw["lora_target_modules"]), precision=kw["precision"],
        gradient_checkpointing=kw["gradient_checkpointing"],
    )
    assert option_problems(opts, cuda=True) == []
    tmpl = PromptTemplate(kw["instruction"], kw["prompt_template"], kw["prompt_mode"])
    assert tmpl.problems() == []
    if name == "tiny.yaml":
        assert option_problems(opts, cuda=False) == []
        assert ModelOptions(**{**opts.to_dict(), "quantize": "nf4", "method": "lora"}).is_tiny
        assert option_problems(ModelOptions(**{**opts.to_dict(), "quantize": "nf4", "method": "lora"}), cuda=False) == []
    else:
        assert (kw["quantize"], kw["method"]) == ("nf4", "lora")


def test_cli_reports_all_problems_and_exits_2(tmp_path, capsys):

    with pytest.raises(SystemExit) as e:
        run(main, ["--compositions", str(tmp_path / "none.jsonl"), "--captions", str(CAPTIONS), "--out",
                   str(tmp_path / "o"), "--quantize", "nf4", "--train-split", "val"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 problems with the options:")
    for part in ("quantize nf4 needs --method lora", "train_split and eval_split are both 'val'",
                 "compositions not found", "none.jsonl"):
        assert part in err
    with pytest.raises(SystemExit) as e:  # a bound: refused by the typed check, before the rules between options
        run(main, ["--compositions", str(tmp_path / "none.jsonl"), "--captions", str(CAPTIONS), "--out",
                   str(tmp_path / "o"), "--epochs", "0"])
    assert e.value.code == 2
    assert "--epochs '0' is invalid; expected a number > 0 (default: 10.0)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written
