"""distill.extend: the grown model equals the base on base tokens; mean, subword-mean and regression rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

from distill import extend
from pipeline import tokenize
from test_distill_fixtures import build_teacher, english_texts, sample_texts, write_lines
from tokenizer_training.extend import read_extension


def run_tokenize(*argv: str) -> None:
    assert tokenize.main([*argv, "--quiet"]) == 0


def run_extend(*argv: str) -> dict:
    assert extend.main([*argv, "--quiet"]) == 0
    return json.loads((Path(argv[argv.index("--output") + 1]) / extend.REPORT_FILE).read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Korean base (cased, 3 [unused] slots) and English donor tokenizers and BERTs; the extension fills the slots."""
    root = tmp_path_factory.mktemp("extend")
    ko_text, en_text = write_lines(root / "ko.txt", sample_texts()), write_lines(root / "en.txt", english_texts())
    run_tokenize("--input", str(ko_text), "--format", "text", "--output", str(root / "ko"), "--vocab-size", "3000",
                 "--unused-tokens", "3")
    run_tokenize("--input", str(en_text), "--format", "text", "--output", str(root / "en"), "--vocab-size", "1500")
    run_tokenize("--extend", str(root / "ko"), "--add-vocab-from", str(root / "en"), "--output", str(root / "koen"),
                 "--fill-unused")
    sizes = {name: len((root / name / "vocab.txt").read_text(encoding="utf-8").splitlines()) for name in ("ko", "en")}
    base = build_teacher(root / "ko-bert", root / "ko", sizes["ko"], layers=2, hidden=16, heads=2, seed=1)
    donor = build_teacher(root / "en-bert", root / "en", sizes["en"], layers=2, hidden=24, heads=2, seed=2)
    return {"root": root, "ko": root / "ko", "en": root / "en", "koen": root / "koen", "base": base, "donor": donor}


def kept_base_ids(world) -> list[int]:
    extension = read_extension(str(world["koen"]))
    new = {token_id for _, token_id in extension["added"]}
    return [index for index in range(extension["base"]["vocab_size"]) if index not in new]


@pytest.mark.parametrize("init", ["mean", "subword-mean", "regression"])
def test_grown_model_equals_the_base_on_base_tokens(world, init, tmp_path):
    donor = ["--donor", str(world["donor"])] if init == "regression" else []
    report = run_extend("--model", str(world["base"]), "--tokenizer", str(world["koen"]), "--init", init,
                        "--output", str(tmp_path / "out"), *donor)
    grown = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "out")).eval()
    base = AutoModelForMaskedLM.from_pretrained(str(world["base"])).eval()
    extension = read_extension(str(world["koen"]))
    assert grown.config.vocab_size == extension["vocab_size"] == len(AutoTokenizer.from_pretrained(str(tmp_path / "out")))
    assert (tmp_path / "out" / "model.safetensors").exists() and report["new_rows"] == len(extension["added"])
    kept = kept_base_ids(world)
    generator = torch.Generator().manual_seed(3)
    ids = torch.tensor(kept)[torch.randint(len(kept), (3, 40), generator=generator)]
    with torch.no_grad():
        before, after = base(input_ids=ids, output_hidden_states=True), grown(input_ids=ids, output_hidden_states=True)
    for old, new in zip(before.hidden_states, after.hidden_states):
        assert (old - new).abs().max() < 1e-5
    assert (before.logits[..., kept] - after.logits[..., kept]).abs().max() < 1e-5
    assert report["base_max_abs_difference"] < 1e-5
    assert grown.cls.predictions.decoder.weight.data_ptr() == grown.bert.embeddings.word_embeddings.weight.data_ptr()
    new_ids = [token_id for _, token_id in extension["added"]]
    assert new_ids[:3] == [5, 6, 7]  # the filled [unused] slots got new rows too
    rows = grown.bert.embeddings.word_embeddings.weight[new_ids]
    assert torch.isfinite(rows).all() and not torch.equal(rows[:3], base.bert.embeddings.word_embeddings.weight[5:8])


def ordinary_base_rows(world) -> tuple[torch.Tensor, torch.Tensor]:
    weights = load_file(str(world["base"] / "model.safetensors"))
    vocab = (world["ko"] / "vocab.txt").read_text(encoding="utf-8").splitlines()
    ordinary = [index for index in kept_base_ids(world) if not vocab[index].startswith("[")]
    return weights["bert.embeddings.word_embeddings.weight"][ordinary], weights["cls.predictions.bias"][ordinary]


def test_mean_rows_are_the_mean_of_the_ordinary_base_rows(world, tmp_path):
    run_extend("--model", str(world["base"]), "--tokenizer", str(world["koen"]), "--init", "mean",
               "--output", str(tmp_path / "out"))
    grown = load_file(str(tmp_path / "out" / "model.safetensors"))
    embeddings, bias = ordinary_base_rows(world)
    new_ids = [token_id for _, token_id in read_extension(str(world["koen"]))["added"]]
    assert torch.allclose(grown["bert.embeddings.word_embeddings.weight"][new_ids],
                          embeddings.double().mean(0).float().expand(len(new_ids), -1), atol=1e-6)
    assert torch.allclose(grown["cls.predictions.bias"][new_ids], bias.double().mean().float().expand(len(new_ids)), atol=1e-6)


def test_subword_mean_rows_are_the_mean_of_the_base_pieces(world, tmp_path):
    report = run_extend("--model", str(world["base"]), "--tokenizer", str(world["koen"]), "--init", "subword-mean",
                        "--output", str(tmp_path / "out"))
    grown = load_file(str(tmp_path / "out" / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    base = load_file(str(world["base"] / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    base_tokenizer = AutoTokenizer.from_pretrained(str(world["ko"]))
    added = dict((token, token_id) for token, token_id in read_extension(str(world["koen"]))["added"])
    checked = 0
    for word, token_id in added.items():
        pieces = base_tokenizer(word, add_special_tokens=False)["input_ids"]
        if word.startswith("##") or base_tokenizer.unk_token_id in pieces:
            continue
        assert len(pieces) > 1  # the base lacked the word, so it splits it
        assert torch.allclose(grown[token_id], base[pieces].mean(0), atol=1e-6)
        checked += 1
    assert checked >= 10
    assert 0 < report["fit"]["no_pieces"] < len(added)


def test_regression_recovers_an_exact_affine_relation(world, tmp_path):
    """A donor whose rows are an affine image of the base's rows (shared tokens) and of chosen rows
    (new tokens): the fit is exact (R² 1 on held-out tokens) and the new rows come back."""
    extension = read_extension(str(world["koen"]))
    generator = torch.Generator().manual_seed(5)
    base_dir, donor_dir = copy_model(world["base"], tmp_path / "base"), copy_model(world["donor"], tmp_path / "donor")
    base = load_file(str(base_dir / "model.safetensors"))
    base["cls.predictions.bias"] = torch.randn(len(base["cls.predictions.bias"]), generator=generator)
    save_weights(base, base_dir)
    base_rows, base_bias = base["bert.embeddings.word_embeddings.weight"].double(), base["cls.predictions.bias"].double()
    donor = load_file(str(donor_dir / "model.safetensors"))
    matrix = torch.randn(16, 24, generator=generator, dtype=torch.float64)  # base hidden 16 -> donor hidden 24
    shift = torch.randn(24, generator=generator, dtype=torch.float64)
    targets = torch.randn(extension["vocab_size"], 16, generator=generator, dtype=torch.float64)
    target_bias = torch.randn(extension["vocab_size"], generator=generator, dtype=torch.float64)
    embeddings = donor["bert.embeddings.word_embeddings.weight"].double()
    bias = donor["cls.predictions.bias"].double()
    new_ids = {token_id for _, token_id in extension["added"]}
    for donor_id, new_id in enumerate(extension["id_map"]):
        if new_id < 0:
            continue
        new = new_id in new_ids
        embeddings[donor_id] = (targets[new_id] if new else base_rows[new_id]) @ matrix + shift
        bias[donor_id] = 2 * (target_bias[new_id] if new else base_bias[new_id]) + 1
    donor["bert.embeddings.word_embeddings.weight"] = embeddings.float()
    donor["cls.predictions.bias"] = bias.float()
    save_weights(donor, donor_dir)
    report = run_extend("--model", str(base_dir), "--tokenizer", str(world["koen"]), "--init", "regression",
                        "--donor", str(donor_dir), "--output", str(tmp_path / "out"))
    assert report["fit"]["held_out"]["r2"] > 0.9999 and report["fit"]["held_out"]["cosine"] > 0.9999
    assert report["fit"]["shared_tokens"] > 52 and report["fit"]["held_out"]["tokens"] >= 5
    grown = load_file(str(tmp_path / "out" / "model.safetensors"))
    ids = sorted(new_ids)
    assert torch.allclose(grown["bert.embeddings.word_embeddings.weight"][ids].double(), targets[ids], atol=1e-3)
    assert torch.allclose(grown["cls.predictions.bias"][ids].double(), target_bias[ids], atol=1e-3)


def copy_model(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def save_weights(weights: dict, directory: Path) -> None:
    """model.safetensors without the tied decoder weight (transformers restores it from the embeddings)."""
    weights.pop("cls.predictions.decoder.weight", None)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})


def test_clear_errors(world, tmp_path, capsys):
    def usage(*argv: str) -> str:
        assert extend.main([*argv, "--quiet"]) == 2
        return capsys.readouterr().err

    common = ("--tokenizer", str(world["koen"]), "--output", str(tmp_path / "x"))
    assert "needs --donor" in usage("--model", str(world["base"]), "--init", "regression", *common)
    assert "--donor only applies" in usage("--model", str(world["base"]), "--init", "mean", "--donor",
                                           str(world["donor"]), *common)
    assert "vocab_size" in usage("--model", str(world["donor"]), "--init", "mean", *common)
    assert "not the extension's source" in usage("--model", str(world["base"]), "--init", "regression", "--donor",
                                                 str(_renamed_donor(world, tmp_path)), *common)
    assert "no extension.json" in usage("--model", str(world["base"]), "--init", "mean", "--tokenizer",
                                        str(world["ko"]), "--output", str(tmp_path / "y"))
    assert not (tmp_path / "x" / extend.REPORT_FILE).exists()


def _renamed_donor(world, tmp_path: Path) -> Path:
    """The donor with one token of its vocabulary renamed: same size, another tokenizer."""
    donor = copy_model(world["donor"], tmp_path / "renamed")
    (donor / "tokenizer.json").unlink()
    vocab = (donor / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[-1] = vocab[-1] + "zz"
    (donor / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    return donor


def test_help_answers_without_torch():
    import subprocess
    import sys

    code = "import sys; from distill import extend; extend.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "False"


def test_a_corpus_extension_grows_by_subword_mean_and_refuses_regression(world, tmp_path, capsys):
    """--add-tokens words have no donor: subword-mean grows the model (base rows kept), regression is refused."""
    tokenizer = tmp_path / "tok"
    run_tokenize("--extend", str(world["ko"]), "--add-tokens", "30", "--input", str(world["root"] / "en.txt"),
                 "--format", "text", "--output", str(tokenizer))
    report = run_extend("--model", str(world["base"]), "--tokenizer", str(tokenizer), "--init", "subword-mean",
                        "--output", str(tmp_path / "out"))
    assert report["new_rows"] == 30 and report["base_max_abs_difference"] < 1e-5
    assert extend.main(["--model", str(world["base"]), "--tokenizer", str(tokenizer), "--init", "regression",
                        "--donor", str(world["donor"]), "--output", str(tmp_path / "x"), "--quiet"]) == 2
    assert "no donor model" in capsys.readouterr().err
