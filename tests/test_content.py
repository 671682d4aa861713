"""Scene/object semantics reaching the restorer's content-aware block (restorer/content.py)."""

import pytest
import torch

from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.restorer.content import (load_semantic_encoder, semantic_phrases,
                                             semantic_tokens)
from reason_restore.restorer.engine import Restorer
from reason_restore.restorer.network import PriorRestorer, RestorerConfig, grown_copy
from reason_restore.restorer.prior import prior_dim

WORDS = ["a", "landscape", "lake", "lakeside", "street", "scene", "dog", "of", "photograph"]


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny random BERT + a tokenizer whose vocabulary the test writes (no downloads)."""
    from transformers import BertConfig, BertModel, BertTokenizer
    folder = tmp_path_factory.mktemp("minilm")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(folder))
    return folder


def _diag(scene="", objects=()):
    return Diagnosis.from_findings([Finding.from_params("noise", {"sigma": 25.0}, 1.0, "user")],
                                   scene=scene, objects=list(objects))


def test_phrases_scene_first_deduplicated_and_capped():
    d = _diag("a landscape", ["lakeside", "Lakeside", "dog", "", "b", "c", "d", "e", "f"])
    assert semantic_phrases(d) == ["a landscape", "lakeside", "dog", "b", "c", "d"]
    assert semantic_phrases(None) == []
    assert semantic_phrases(_diag()) == []


def test_encoder_embeds_phrases_normalised_and_cached(tiny_encoder_dir):
    enc = load_semantic_encoder(tiny_encoder_dir)
    v = enc.encode(["a landscape", "lakeside", "a landscape"])
    assert v.shape == (3, 16)
    assert torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(v[0], v[2])
    assert not torch.allclose(v[0], v[1])


def test_tokens_padded_with_mask(tiny_encoder_dir):
    enc = load_semantic_encoder(tiny_encoder_dir)
    tokens, mask = semantic_tokens([_diag("a landscape", ["dog"]), _diag(), None], enc)
    assert tokens.shape == (3, 2, 16)
    assert mask.tolist() == [[True, True], [False, False], [False, False]]
    assert semantic_tokens([_diag()], enc) == (None, None)
    assert semantic_tokens([_diag("a landscape")], None) == (None, None)


def test_missing_encoder_folder_is_logged_not_raised(tmp_path, caplog):
    assert load_semantic_encoder(tmp_path / "nothing-here") is None


def test_grown_copy_starts_identical_and_refuses_other_changes():
    torch.manual_seed(0)
    base = PriorRestorer(RestorerConfig(prior_dim=prior_dim(), width=8)).eval()
    for p in base.parameters():  # make the base non-trivial (NAFNet's betas start at 0)
        p.data.add_(torch.randn_like(p) * 0.05)
    grown = grown_copy(base, text_dim=16, use_reference=True).eval()
    x = torch.rand(1, 3, 24, 24)
    prior = torch.rand(1, prior_dim())
    tokens, mask = torch.randn(1, 3, 16), torch.tensor([[1, 1, 0]])
    with torch.no_grad():
        want = base(x, prior)
        got = grown(x, prior, text_tokens=tokens, text_mask=mask, reference=torch.rand_like(x))
    assert torch.allclose(want, got, atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        grown_copy(base, width=16)
    with pytest.raises(ValueError, match="text_dim is already"):
        grown_copy(grown, text_dim=8)


def test_restorer_feeds_semantics_to_content_block(tiny_encoder_dir):
    """The engine turns the diagnosis' scene/objects into tokens, and they change the output
    once the content block is non-neutral; without semantics the block is skipped."""
    torch.manual_seed(0)
    model = PriorRestorer(RestorerConfig(prior_dim=prior_dim(), width=8, text_dim=16)).eval()
    torch.nn.init.normal_(model.content.attn.proj.weight, std=0.5)
    seen = []
    hook = model.content.register_forward_hook(lambda m, a, o: seen.append(a[1].shape))
    restorer = Restorer(model, text_encoder=load_semantic_encoder(tiny_encoder_dir))
    img = torch.rand(1, 3, 32, 32)
    plain = restorer.restore(img, [_diag()])
    assert seen == []  # no semantics: block skipped, not fed zeros
    with_sem = restorer.restore(img, [_diag("a landscape", ["lakeside", "dog"])])
    assert seen and seen[0][1] == 3
    assert not torch.allclose(plain, with_sem)
    hook.remove()


def test_restorer_without_encoder_ignores_semantics():
    model = PriorRestorer(RestorerConfig(prior_dim=prior_dim(), width=8, text_dim=16)).eval()
    torch.nn.init.normal_(model.content.attn.proj.weight, std=0.5)
    restorer = Restorer(model, text_encoder=None)
    img = torch.rand(1, 3, 16, 16)
    a = restorer.restore(img, [_diag("a landscape")])
    b = restorer.restore(img, [_diag()])
    assert torch.equal(a, b)
